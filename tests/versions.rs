//! Pipeline versions against a real controller: every update is kept, listed newest
//! first, viewable with `get --version` and diffable with `sluice pipeline diff`.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use sluice_e2e::*;

/// The definition: a git source and a build; `branch` changes between versions and
/// `lint` adds an action to the build stage.
fn definition(branch: &str, lint: bool) -> String {
    let mut text = format!(
        r#"
name: versioned
stages:
  - name: Source
    actions:
      - name: Checkout
        actionTypeId: {{category: Source, owner: Sluice, provider: git, version: "1"}}
        configuration:
          RepositoryPath: /srv/repo
          BranchName: {branch}
        outputArtifacts: [Code]
  - name: Build
    actions:
      - name: Package
        actionTypeId: {{category: Build, owner: Sluice, provider: commands, version: "1"}}
        configuration:
          Commands: sh build.sh
        inputArtifacts: [Code]
"#
    );
    if lint {
        text.push_str(
            r#"      - name: Lint
        actionTypeId: {category: Test, owner: Sluice, provider: commands, version: "1"}
        runOrder: 2
        configuration:
          Commands: sh lint.sh
        inputArtifacts: [Code]
"#,
        );
    }
    text
}

/// A controller holding "versioned" in three versions: as created, with another branch,
/// and with a Lint action added.
fn three_versions(dir: &Path) -> Controller {
    let controller = Controller::start(dir, 0, &[]);
    let file = dir.join("versioned.yaml");
    std::fs::write(&file, definition("main", false)).unwrap();
    controller.create_pipeline(&file);
    std::fs::write(&file, definition("release", false)).unwrap();
    controller.update_pipeline(&file);
    std::fs::write(&file, definition("release", true)).unwrap();
    controller.update_pipeline(&file);
    controller
}

#[test]
fn versions_are_listed_newest_first_with_the_current_one_marked() {
    let dir = tempfile::tempdir().unwrap();
    let c = three_versions(dir.path());

    let versions = c.json(&["pipeline", "versions", "versioned"]);
    let versions = versions.as_array().unwrap();
    assert_eq!(versions.len(), 3, "{versions:?}");
    let numbers: Vec<i64> = versions
        .iter()
        .map(|v| v["version"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, [3, 2, 1]);
    let current: Vec<bool> = versions
        .iter()
        .map(|v| v["current"].as_bool().unwrap())
        .collect();
    assert_eq!(current, [true, false, false]);
    let actions: Vec<i64> = versions
        .iter()
        .map(|v| v["actions"].as_i64().unwrap())
        .collect();
    assert_eq!(actions, [3, 2, 2]);
    assert!(versions.iter().all(|v| v["stages"] == 2));
    assert!(
        versions
            .iter()
            .all(|v| v["createdAtMs"].as_i64().unwrap() > 0)
    );

    let text = ok(c.cli().args(["pipeline", "versions", "versioned"]));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(lines[0].contains("VERSION") && lines[0].contains("ACTIONS"));
    // Columns line up under their headings.
    assert!(lines[1].starts_with("      3  "), "{text}");
    assert!(lines[1].ends_with("       3  current"), "{text}");
    assert!(
        lines[3].starts_with("      1  ") && lines[3].ends_with("       2"),
        "{text}"
    );
    assert!(!lines[2].contains("current") && !lines[3].contains("current"));

    // An unknown pipeline is a clear 404: exit 5 and its name.
    let (out, _, stderr) = run(c.cli().args(["pipeline", "versions", "nope"]));
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(
        stderr.contains("pipeline \"nope\" does not exist"),
        "{stderr}"
    );
}

#[test]
fn diff_shows_the_changed_value_and_the_added_action() {
    let dir = tempfile::tempdir().unwrap();
    let c = three_versions(dir.path());

    let diff = ok(c.cli().args(["pipeline", "diff", "versioned", "1", "3"]));
    println!("{diff}");
    let lines: Vec<&str> = diff.lines().collect();
    assert_eq!(lines[0], "--- versioned version 1", "{diff}");
    assert_eq!(lines[1], "+++ versioned version 3", "{diff}");
    assert!(lines[2].starts_with("@@ "), "{diff}");
    let removed = |needle: &str| {
        lines
            .iter()
            .any(|l| l.starts_with('-') && l.contains(needle))
    };
    let added = |needle: &str| {
        lines
            .iter()
            .any(|l| l.starts_with('+') && l.contains(needle))
    };
    assert!(removed(r#""BranchName": "main""#), "{diff}");
    assert!(added(r#""BranchName": "release""#), "{diff}");
    assert!(added(r#""name": "Lint""#), "{diff}");
    assert!(added(r#""Commands": "sh lint.sh""#), "{diff}");
    // Not a terminal: no colour.
    assert!(!diff.contains('\x1b'), "{diff}");
    // Unchanged parts are context at most, never removed.
    assert!(!removed(r#""name": "Package""#), "{diff}");

    let json = c.json(&["pipeline", "diff", "versioned", "1", "3"]);
    assert_eq!(json["from"], 1);
    assert_eq!(json["to"], 3);
    assert_eq!(json["diff"].as_str().unwrap(), diff);

    // Backwards works too, with the signs swapped.
    let back = ok(c.cli().args(["pipeline", "diff", "versioned", "3", "1"]));
    assert!(
        back.lines()
            .any(|l| l.starts_with('-') && l.contains(r#""name": "Lint""#)),
        "{back}"
    );
}

#[test]
fn diff_of_a_version_with_itself_is_identical() {
    let dir = tempfile::tempdir().unwrap();
    let c = three_versions(dir.path());

    let same = ok(c.cli().args(["pipeline", "diff", "versioned", "2", "2"]));
    assert_eq!(same.trim(), "versions 2 and 2 are identical");
    let json = c.json(&["pipeline", "diff", "versioned", "2", "2"]);
    assert_eq!(json["diff"], "");
}

#[test]
fn diff_with_an_unknown_version_exits_5_naming_the_versions_that_exist() {
    let dir = tempfile::tempdir().unwrap();
    let c = three_versions(dir.path());

    let (out, stdout, stderr) = run(c.cli().args(["pipeline", "diff", "versioned", "1", "9"]));
    assert_eq!(out.status.code(), Some(5), "{stdout}{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains("pipeline \"versioned\" has no version 9; its versions are 1, 2, 3"),
        "{stderr}"
    );

    let (out, _, stderr) = run(c.cli().args(["pipeline", "diff", "nope", "1", "2"]));
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(
        stderr.contains("pipeline \"nope\" does not exist"),
        "{stderr}"
    );
}

#[test]
fn get_with_an_old_version_returns_that_definition() {
    let dir = tempfile::tempdir().unwrap();
    let c = three_versions(dir.path());

    let first = c.json(&["pipeline", "get", "versioned", "--version", "1"]);
    assert_eq!(first["version"], 1);
    let stages = &first["definition"]["stages"];
    assert_eq!(
        stages[0]["actions"][0]["configuration"]["BranchName"],
        "main"
    );
    assert_eq!(stages[1]["actions"].as_array().unwrap().len(), 1);

    let current = c.json(&["pipeline", "get", "versioned"]);
    assert_eq!(current["version"], 3);
    assert_eq!(
        current["definition"]["stages"][1]["actions"][1]["name"],
        "Lint"
    );

    // The text form is the one `diff` compares.
    let text = ok(c
        .cli()
        .args(["pipeline", "get", "versioned", "--version", "1"]));
    assert!(text.starts_with("# versioned version 1, stored "), "{text}");
    assert!(text.contains(r#""BranchName": "main""#), "{text}");

    let (out, _, stderr) = run(c
        .cli()
        .args(["pipeline", "get", "versioned", "--version", "9"]));
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("has no version 9"), "{stderr}");
}
