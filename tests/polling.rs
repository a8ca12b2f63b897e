//! End-to-end test of source polling: a pipeline with `polling` has its git Source
//! action checked by a real agent (the source plugin's `check`); the first check only
//! records the branch head, a new commit starts exactly one execution with trigger
//! `PollForSourceChanges` that checks out that commit, and no further commit starts
//! nothing more. A commit that a run started by hand already took starts no polled run:
//! the recorded revision follows it.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use sluice_e2e::*;

#[test]
fn polling_starts_one_run_per_new_commit_after_recording_the_first_head() {
    let dir = tempfile::tempdir().unwrap();
    let repo = git_repo(&dir.path().join("repo"), &[("v.txt", "one\n")]);
    let (controller, _agent) = start_with_agent(dir.path(), &["--min-poll-interval", "1s"], 2);

    // Out of range intervals are refused at create, with their path.
    let file = dir.path().join("polled.yaml");
    let write = |interval: u32| {
        Pipeline::new("polled")
            .header(&format!("polling: {{intervalSeconds: {interval}}}"))
            .git_source(&repo)
            .build(
                "Build",
                "Show",
                "echo commit=#{Src.CommitId} file=$(cat v.txt)",
            )
            .write(dir.path());
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
    assert!(controller.executions("polled").is_empty());

    std::fs::write(repo.join("v.txt"), "two\n").unwrap();
    git(&repo, &["commit", "-qam", "Second"]);
    let second = git(&repo, &["rev-parse", "HEAD"]);
    let listed = wait_for("a polled run", Duration::from_secs(60), || {
        let listed = controller.executions("polled");
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
    let log = controller.logs(id, "Build/Show");
    assert!(log.contains(&format!("commit={second} file=two")), "{log}");

    // No new commit: no new run.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(controller.executions("polled").len(), 1);
}

/// The attempt phase of `action` in execution `id`, once it has an attempt.
fn phase(controller: &Controller, id: &str, action: &str) -> Option<String> {
    controller
        .db()
        .query_row(
            "SELECT phase FROM action_attempts WHERE execution_id = ?1 AND action_name = ?2
             ORDER BY attempt DESC LIMIT 1",
            [id, action],
            |r| r.get(0),
        )
        .ok()
}

fn recorded(controller: &Controller, pipeline: &str) -> Option<String> {
    controller
        .db()
        .query_row(
            "SELECT revision FROM poll_revisions WHERE pipeline = ?1",
            [pipeline],
            |r| r.get(0),
        )
        .ok()
}

fn polled_runs(controller: &Controller, pipeline: &str) -> Vec<serde_json::Value> {
    controller
        .executions(pipeline)
        .into_iter()
        .filter(|e| e["triggerType"] == "PollForSourceChanges")
        .collect()
}

#[test]
fn a_commit_a_run_started_by_hand_took_starts_no_polled_run() {
    let dir = tempfile::tempdir().unwrap();
    let repo = git_repo(&dir.path().join("repo"), &[("v.txt", "one\n")]);
    // One slot, so that a blocker can hold the hand-started run's Source action queued
    // until the commit is in: the run surely checks it out, and polling surely sees it.
    let (controller, _agent) = start_with_agent(dir.path(), &["--min-poll-interval", "1s"], 1);
    let file = Pipeline::new("polled")
        .header("polling: {intervalSeconds: 1}")
        .git_source(&repo)
        .build("Build", "Show", "echo commit=#{Src.CommitId}")
        .write(dir.path());
    controller.create_pipeline(&file);
    let release = dir.path().join("release");
    let blocker = Pipeline::new("blocker")
        .build(
            "Hold",
            "Wait",
            &format!(
                "for i in $(seq 600); do test -e {} && exit 0; sleep 0.1; done; exit 1",
                release.display()
            ),
        )
        .write(dir.path());
    controller.create_pipeline(&blocker);

    let first = git(&repo, &["rev-parse", "HEAD"]);
    wait_for(
        "the first check to record the head",
        Duration::from_secs(60),
        || (recorded(&controller, "polled").as_deref() == Some(first.as_str())).then_some(()),
    );

    // The blocker takes the only slot; the run started by hand waits with its Source
    // action queued while a commit lands on the branch.
    let held = controller.start_pipeline("blocker");
    wait_for(
        "the blocker to hold the slot",
        Duration::from_secs(60),
        || (phase(&controller, &held, "Wait").as_deref() == Some("running")).then_some(()),
    );
    let by_hand = controller.start_pipeline("polled");
    let waiting = phase(&controller, &by_hand, "Checkout");
    assert!(
        matches!(waiting.as_deref(), Some("queued" | "offered")),
        "{waiting:?}"
    );
    std::fs::write(repo.join("v.txt"), "two\n").unwrap();
    git(&repo, &["commit", "-qam", "Second"]);
    let second = git(&repo, &["rev-parse", "HEAD"]);
    // Polling sees the commit but waits for what the queued Source action takes.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(polled_runs(&controller, "polled").is_empty());

    std::fs::write(&release, "").unwrap();
    let e = controller.wait_finished(&by_hand, Duration::from_secs(60));
    assert_eq!(e["status"], "Succeeded", "{e}");
    assert_eq!(e["triggerType"], "StartPipelineExecution", "{e}");
    let log = controller.logs(&by_hand, "Build/Show");
    assert!(log.contains(&format!("commit={second}")), "{log}");
    assert_eq!(
        controller.wait_finished(&held, Duration::from_secs(60))["status"],
        "Succeeded"
    );

    // The recorded revision follows the run, and no polled run starts for it.
    wait_for(
        "polling to record the commit the run took",
        Duration::from_secs(30),
        || (recorded(&controller, "polled").as_deref() == Some(second.as_str())).then_some(()),
    );
    std::thread::sleep(Duration::from_millis(2500));
    assert!(polled_runs(&controller, "polled").is_empty());
    assert_eq!(controller.executions("polled").len(), 1);

    // A commit no run took starts one polled run.
    std::fs::write(repo.join("v.txt"), "three\n").unwrap();
    git(&repo, &["commit", "-qam", "Third"]);
    let third = git(&repo, &["rev-parse", "HEAD"]);
    let polled = wait_for("a polled run", Duration::from_secs(60), || {
        let polled = polled_runs(&controller, "polled");
        (!polled.is_empty()).then_some(polled)
    });
    let id = polled[0]["id"].as_str().unwrap();
    let e = controller.wait_finished(id, Duration::from_secs(60));
    assert_eq!(e["status"], "Succeeded", "{e}");
    let detail = e["triggerDetail"].as_str().unwrap();
    assert!(
        detail.starts_with(&format!("Checkout {}: Third", &third[..12])),
        "{detail}"
    );
    assert_eq!(polled_runs(&controller, "polled").len(), 1);
    assert_eq!(controller.executions("polled").len(), 2);
}
