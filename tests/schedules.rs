//! End-to-end tests of the Sluice trigger extensions: cron `schedules` and `watch`ed
//! directories start executions on a real controller with a real agent.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use sluice_e2e::*;

/// Source (directory) → Build (`commands`), with `triggers` YAML spliced in at the top.
fn definition(dir: &Path, name: &str, source: &Path, triggers: &str) -> std::path::PathBuf {
    Pipeline::new(name)
        .header("executionMode: PARALLEL\nvariables:\n  - name: Env\n    defaultValue: dev")
        .header(triggers)
        .source_dir(source)
        .build("Build", "Work", "echo env=#{variables.Env}")
        .write(dir)
}

#[test]
fn a_schedule_starts_runs_until_it_is_removed_and_bad_crons_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("src");
    std::fs::create_dir_all(&source).unwrap();
    std::fs::write(source.join("a.txt"), "a\n").unwrap();
    let (controller, _agent) = start_with_agent(dir.path(), &[], 4);

    // A cron expression that is not valid is refused at create, with its path.
    let bad = definition(
        dir.path(),
        "bad",
        &source,
        "schedules:\n  - {cron: \"0 3 * *\", timeZone: Europe/Berlin}\n  - {cron: \"* * * * *\", timeZone: Mars/Base}",
    );
    let (out, stdout, stderr) = run(controller.cli().args(["pipeline", "create"]).arg(&bad));
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stderr.contains("schedules[0].cron: \"0 3 * *\" has 4 fields"),
        "{stderr}"
    );
    assert!(
        stderr.contains("schedules[1].timeZone: unknown time zone \"Mars/Base\""),
        "{stderr}"
    );

    // Every second (6 fields), with a variable override.
    let every_second =
        "schedules:\n  - {cron: \"* * * * * *\", timeZone: UTC, variables: {Env: scheduled}}";
    let file = definition(dir.path(), "ticking", &source, every_second);
    controller.create_pipeline(&file);
    let listed = wait_for("two scheduled runs", Duration::from_secs(30), || {
        let listed = controller.executions("ticking");
        (listed.len() >= 2).then_some(listed)
    });
    for summary in &listed {
        let id = summary["id"].as_str().unwrap();
        let e = controller.execution(id);
        assert_eq!(e["triggerType"], "Schedule", "{e}");
        assert_eq!(e["triggerDetail"], "cron * * * * * * UTC", "{e}");
    }
    // The oldest run entered its first stage at once, so no later one can supersede it
    // (a newer one waiting in front of a locked stage may be).
    let id = listed.last().unwrap()["id"].as_str().unwrap();
    let e = controller.wait_finished(id, Duration::from_secs(60));
    assert_eq!(e["status"], "Succeeded", "{e}");
    let log = controller.logs(id, "Build/Work");
    assert!(log.contains("env=scheduled"), "{log}");
    let shown = ok(controller.cli().args(["execution", "get", id]));
    assert!(shown.contains("Schedule (cron * * * * * * UTC)"), "{shown}");

    // Removing the schedule stops it (definitions are re-read every 2 s).
    let file = definition(dir.path(), "ticking", &source, "");
    controller.update_pipeline(&file);
    std::thread::sleep(Duration::from_secs(4));
    let before = controller.executions("ticking").len();
    std::thread::sleep(Duration::from_secs(4));
    let after = controller.executions("ticking").len();
    assert_eq!(before, after, "the removed schedule still starts runs");
}

#[test]
fn writing_files_into_a_watched_directory_starts_one_run_after_the_debounce() {
    let dir = tempfile::tempdir().unwrap();
    let watched = dir.path().join("watched");
    std::fs::create_dir_all(&watched).unwrap();
    std::fs::write(watched.join("first.txt"), "first\n").unwrap();
    let (controller, _agent) = start_with_agent(dir.path(), &[], 2);

    // A relative path is refused at create, with its path.
    let bad = definition(
        dir.path(),
        "bad",
        &watched,
        "watch:\n  - {path: relative/dir}",
    );
    let (out, _, stderr) = run(controller.cli().args(["pipeline", "create"]).arg(&bad));
    assert!(!out.status.success());
    assert!(
        stderr.contains("watch[0].path: \"relative/dir\" is a relative path"),
        "{stderr}"
    );

    let triggers = format!(
        "watch:\n  - {{path: {}, debounceSeconds: 2, sourceActionName: Snapshot}}",
        watched.display()
    );
    let file = definition(dir.path(), "watching", &watched, &triggers);
    controller.create_pipeline(&file);
    // The watcher picks the definition up within 2 s.
    std::thread::sleep(Duration::from_secs(3));
    assert!(controller.executions("watching").is_empty());

    for i in 0..5 {
        std::fs::write(watched.join(format!("f{i}.txt")), format!("{i}\n")).unwrap();
        std::thread::sleep(Duration::from_millis(150));
    }
    let written = std::time::Instant::now();
    let listed = wait_for("a run after the changes", Duration::from_secs(60), || {
        let listed = controller.executions("watching");
        (!listed.is_empty()).then_some(listed)
    });
    assert!(
        written.elapsed() >= Duration::from_millis(1500),
        "the run started before the debounce"
    );
    // Quiet since: exactly one run.
    std::thread::sleep(Duration::from_secs(4));
    let listed_again = controller.executions("watching");
    assert_eq!(listed_again.len(), 1, "{listed_again:?}");
    let id = listed[0]["id"].as_str().unwrap();
    let e = controller.wait_finished(id, Duration::from_secs(60));
    assert_eq!(e["status"], "Succeeded", "{e}");
    assert_eq!(e["triggerType"], "DirectoryChange", "{e}");
    assert_eq!(
        e["triggerDetail"],
        format!(
            "5 changed files under {} (source action Snapshot)",
            watched.display()
        ),
        "{e}"
    );
}
