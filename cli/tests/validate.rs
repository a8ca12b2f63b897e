//! The `sluice` binary itself, offline: `pipeline validate` accepts the sample pipeline
//! and names the exact field, line and exit code of a broken one.
//!
//! Being an integration test of the `sluice-cli` package, this also makes
//! `cargo test --workspace` build `target/<profile>/sluice`, which the end-to-end tests
//! (tests/) run.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

fn sluice() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    // Offline: no controller is asked, whatever the environment says.
    cmd.env_remove("SLUICE_URL")
        .env_remove("SLUICE_TOKEN")
        .env_remove("SLUICE_CA");
    cmd
}

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

#[test]
fn the_sample_pipeline_is_valid() {
    let sample = workspace().join("examples").join("sample-pipeline.yaml");
    let out = sluice()
        .args(["pipeline", "validate"])
        .arg(&sample)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("is valid"), "{stdout}");
}

#[test]
fn a_broken_definition_names_the_field_and_line_and_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("demo.yaml");
    std::fs::write(
        &file,
        r#"name: demo
stages:
  - name: Source
    actions:
      - name: Snap
        actionTypeId: {category: Source, provider: directory}
        configuration: {Path: /tmp}
        outputArtifacts: [Code]
  - name: Build
    actions:
      - name: Make
        actionTypeId: {category: Build, provider: commands}
        configuration: {Commands: "echo hi"}
        inputArtifacts: [Cod]
"#,
    )
    .unwrap();
    let out = sluice()
        .args(["pipeline", "validate"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(
            r#"stages[1].actions[0].inputArtifacts[0]: "Cod" is not produced by an earlier action (line 14)"#
        ),
        "{text}"
    );
}
