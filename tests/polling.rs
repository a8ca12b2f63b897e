//! End-to-end test of source polling: a pipeline with `polling` has its git Source
//! action checked by a real agent (the source plugin's `check`); the first check only
//! records the branch head, a new commit starts exactly one execution with trigger
//! `PollForSourceChanges` that checks out that commit, and no further commit starts
//! nothing more.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use sluice_e2e::*;

fn git(repo: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=T", "-c", "user.email=t@example.invalid"])
        .args(args)
        .current_dir(repo)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn executions(controller: &Controller, pipeline: &str) -> Vec<serde_json::Value> {
    controller
        .json(&["execution", "list", "--pipeline", pipeline])
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn polling_starts_one_run_per_new_commit_after_recording_the_first_head() {
    let dir = tempfile::tempdir().unwrap();
    let repo = git_repo(&dir.path().join("repo"), &[("v.txt", "one\n")]);
    let (controller, _agent) = start_with_agent(dir.path(), &["--min-poll-interval", "1s"], 2);

    // Out of range intervals are refused at create, with their path.
    let file = dir.path().join("polled.yaml");
    let write = |interval: u32| {
        std::fs::write(
            &file,
            format!(
                r##"name: polled
polling: {{intervalSeconds: {interval}}}
stages:
  - name: Source
    actions:
      - name: Checkout
        actionTypeId: {{category: Source, provider: git}}
        namespace: Src
        configuration: {{RepositoryPath: {}}}
        outputArtifacts: [Code]
  - name: Build
    actions:
      - name: Show
        actionTypeId: {{category: Build, provider: commands}}
        configuration: {{Commands: "echo commit=#{{Src.CommitId}} file=$(cat v.txt)"}}
        inputArtifacts: [Code]
"##,
                repo.display()
            ),
        )
        .unwrap();
    };
    write(100_000);
    let (out, _, stderr) = run(controller.cli().args(["pipeline", "create"]).arg(&file));
    assert!(!out.status.success());
    assert!(
        stderr.contains("polling.intervalSeconds: 100000 is out of range"),
        "{stderr}"
    );

    write(1);
    controller.create_pipeline(&file);
    // The first check only records the head (on a busy machine it may take a while).
    let first = git(&repo, &["rev-parse", "HEAD"]);
    wait_for(
        "the first check to record the head",
        Duration::from_secs(60),
        || {
            let recorded: Option<String> = controller
                .db()
                .query_row(
                    "SELECT revision FROM poll_revisions WHERE pipeline = 'polled'",
                    [],
                    |r| r.get(0),
                )
                .ok();
            (recorded.as_deref() == Some(first.as_str())).then_some(())
        },
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(executions(&controller, "polled").is_empty());

    std::fs::write(repo.join("v.txt"), "two\n").unwrap();
    git(&repo, &["commit", "-qam", "Second"]);
    let second = git(&repo, &["rev-parse", "HEAD"]);
    let listed = wait_for("a polled run", Duration::from_secs(60), || {
        let listed = executions(&controller, "polled");
        (!listed.is_empty()).then_some(listed)
    });
    let id = listed[0]["id"].as_str().unwrap();
    let e = controller.wait_finished(id, Duration::from_secs(60));
    assert_eq!(e["status"], "Succeeded", "{e}");
    assert_eq!(e["triggerType"], "PollForSourceChanges", "{e}");
    let detail = e["triggerDetail"].as_str().unwrap();
    assert!(
        detail.starts_with(&format!("Checkout {}: ", &second[..12])),
        "{detail}"
    );
    assert!(detail.contains("Second"), "{detail}");
    let log = ok(controller
        .cli()
        .args(["logs", id, "--action", "Build/Show"]));
    assert!(log.contains(&format!("commit={second} file=two")), "{log}");

    // No new commit: no new run.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(executions(&controller, "polled").len(), 1);
}
