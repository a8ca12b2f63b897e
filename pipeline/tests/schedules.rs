//! The `schedules` and `watch` extensions: parsing, validation with paths, and the
//! canonical JSON round trip.

#![allow(clippy::unwrap_used)]

use sluice_pipeline::{Catalog, Pipeline, parse, parse_and_validate};

const STAGES: &str = r#"
stages:
  - name: Source
    actions:
      - name: Snapshot
        actionTypeId: {category: Source, provider: directory}
        configuration: {Path: /srv/app}
        outputArtifacts: [Code]
  - name: Build
    actions:
      - name: Work
        actionTypeId: {category: Build, provider: commands}
        configuration: {Commands: "true"}
        inputArtifacts: [Code]
"#;

fn doc(extra: &str) -> String {
    format!("name: p\nvariables:\n  - name: ENV\n    defaultValue: dev\n{extra}{STAGES}")
}

fn errors(extra: &str) -> String {
    parse_and_validate(&doc(extra), None, &Catalog::builtin())
        .unwrap_err()
        .to_string()
}

#[test]
fn schedules_and_watches_parse_and_round_trip() {
    let text = doc(r#"schedules:
  - cron: "0 3 * * 1-5"
    timeZone: Europe/Berlin
    variables: {ENV: prod}
  - cron: "*/10 * * * * *"
watch:
  - path: /srv/app
    debounceSeconds: 5
    sourceActionName: Snapshot
  - path: /srv/other
"#);
    let parsed = parse_and_validate(&text, None, &Catalog::builtin()).unwrap();
    let p = &parsed.pipeline;
    assert_eq!(p.schedules.len(), 2);
    assert_eq!(p.schedules[0].time_zone, "Europe/Berlin");
    assert_eq!(p.schedules[0].variables["ENV"], "prod");
    assert_eq!(p.schedules[1].time_zone, "UTC");
    assert_eq!(p.watch[0].debounce_seconds, 5);
    assert_eq!(p.watch[0].source_action_name.as_deref(), Some("Snapshot"));
    assert_eq!(p.watch[1].debounce_seconds, 2);

    let json = p.to_json();
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["schedules"][0]["timeZone"], "Europe/Berlin");
    assert_eq!(value["watch"][0]["debounceSeconds"], 5);
    let again = parse(&json, None).unwrap();
    assert_eq!(&again.pipeline, p);
    assert!(again.warnings.is_empty());
    let decoded: Pipeline = serde_json::from_str(&json).unwrap();
    assert_eq!(&decoded, p);
}

#[test]
fn bad_schedules_are_reported_with_paths() {
    let text = errors(
        r#"schedules:
  - cron: "0 3 * *"
  - cron: "0 25 * * *"
    timeZone: Mars/Olympus
    variables: {NOPE: x}
"#,
    );
    assert!(
        text.contains("schedules[0].cron: \"0 3 * *\" has 4 fields"),
        "{text}"
    );
    assert!(
        text.contains("schedules[1].cron: \"0 25 * * *\" is not a valid cron expression"),
        "{text}"
    );
    assert!(
        text.contains("schedules[1].timeZone: unknown time zone \"Mars/Olympus\"")
            && text.contains("Europe/Berlin"),
        "{text}"
    );
    assert!(
        text.contains(
            "schedules[1].variables.NOPE: \"NOPE\" is not a pipeline variable; declared: ENV"
        ),
        "{text}"
    );
    let text = errors("schedules:\n  - {cron: \"* * * * *\", tz: UTC}\n");
    assert!(text.contains("schedules[0].tz: unknown field"), "{text}");
}

#[test]
fn bad_watches_are_reported_with_paths() {
    let text = errors(
        r#"watch:
  - path: relative/dir
    debounceSeconds: 0
  - path: /srv/app
    debounceSeconds: 601
    sourceActionName: Work
"#,
    );
    assert!(
        text.contains("watch[0].path: \"relative/dir\" is a relative path"),
        "{text}"
    );
    assert!(
        text.contains("watch[0].debounceSeconds: 0 is out of range; use 1 to 600 seconds"),
        "{text}"
    );
    assert!(text.contains("watch[1].debounceSeconds: 601"), "{text}");
    assert!(
        text.contains("watch[1].sourceActionName: \"Work\" is not a Source action of the first stage; Source actions: Snapshot"),
        "{text}"
    );
    let many: String = (0..11).map(|i| format!("  - path: /d{i}\n")).collect();
    let text = errors(&format!("watch:\n{many}"));
    assert!(
        text.contains("watch: a pipeline may watch at most 10 directories, found 11"),
        "{text}"
    );
}
