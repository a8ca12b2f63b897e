//! Validation: every semantic rule, reported all at once with paths.
#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use sluice_pipeline::{
    Action, ActionTypeId, Catalog, Category, Format, Pipeline, ProviderEntry, Stage, parse,
    parse_and_validate, validate,
};

fn errors(text: &str, catalog: &Catalog) -> Vec<String> {
    match parse_and_validate(text, None, catalog) {
        Ok(parsed) => panic!("expected errors, got {parsed:?}"),
        Err(diagnostics) => diagnostics.0.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn invalid_definition_reports_every_rule() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/invalid.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    assert_eq!(
        errors(&text, &Catalog::builtin()),
        [
            r#"name: "my pipeline" contains ' ', which is not allowed; use 1 to 100 characters from A-Z a-z 0-9 . @ - _ (line 1)"#,
            "stages[0].actions[1].configuration.Commands: configuration key Commands is required by plugin \
             build-commands (Shell commands, one per line, run in one `sh -e -c` session in the source \
             directory.) (line 9)",
            "stages[0].actions[1].actionTypeId.category: the first stage may contain only Source actions, \
             found Build; move this action to a later stage (line 10)",
            r#"stages[0].actions[1].inputArtifacts[0]: "Src" is not produced by an earlier action: action "Checkout" in this stage produces it with the same runOrder (1), so the two run in parallel; give this action a runOrder above 1 (line 11)"#,
            "stages[1].actions[0].actionTypeId: unknown provider Build/Sluice/commands version 2; \
             available versions: 1 (line 15)",
            "stages[1].actions[0].runOrder: must be from 1 to 999, found 0 (line 16)",
            r#"stages[1].actions[0].inputArtifacts[0]: "BuildOut" is not produced by an earlier action (line 17)"#,
            r#"stages[1].actions[0].outputArtifacts[0]: "Src" is already produced by action "Checkout" in stage "Source"; output artifact names must be unique in the pipeline (line 18)"#,
            r#"stages[1].actions[0].namespace: namespace "src" is already used by action "Checkout" in stage "Source"; namespaces must be unique (line 19)"#,
            r#"stages[1].actions[1].name: duplicate action name "Compile", already used by an earlier action in this stage; action names must be unique within a stage (line 20)"#,
            "stages[1].actions[1].actionTypeId: unknown provider Build/AWS/CodeBuild version 1; \
             available: Build/Sluice/buildspec@1, Test/Sluice/buildspec@1, Build/Sluice/commands@1, \
             Test/Sluice/commands@1, Deploy/Sluice/directory@1, Deploy/Sluice/http@1, \
             Invoke/Sluice/wasm@1, Source/Sluice/directory@1, Source/Sluice/git@1, \
             Test/Sluice/junit@1, Approval/Sluice/manual@1 (line 21)",
            "stages[1].actions[1].configuration.ThisKeyIsFarTooLongToBeAcceptedAsAConfigurationKeyName: \
             configuration keys must have 1 to 50 characters, this one has 54 (line 23)",
            r#"stages[2].name: duplicate stage name "Build", already used by an earlier stage; stage names must be unique (line 24)"#,
            "stages[2].actions[0].actionTypeId.category: Source actions are allowed only in the first \
             stage; move this action there (line 27)",
            r#"stages[2].actions[0].outputArtifacts[0]: "bad name" contains ' ', which is not allowed; use 1 to 100 characters from A-Z a-z 0-9 _ - (line 28)"#,
            "stages[2].actions[1].configuration.TargetDirectory: configuration key TargetDirectory is \
             required by plugin deploy-directory (Absolute path on the agent machine. Sluice makes it a \
             symlink to <TargetDirectory>.sluice/releases/<execution-id>.) (line 29)",
            "stages[2].actions[1].inputArtifacts: Deploy/Sluice/directory@1 takes exactly 1 input \
             artifact, found 0 (line 29)",
            "stages[2].actions[1].timeoutInMinutes: must be from 1 to 86400 minutes, found 0 (line 31)",
        ]
    );
}

/// A two-stage pipeline: a git source, then `build` (YAML lines for the second stage's actions).
fn pipeline_with_build(build: &str) -> String {
    format!(
        "name: p\nstages:\n- name: Source\n  actions:\n  - name: Get\n    actionTypeId: \
         {{category: Source, provider: git}}\n    configuration: {{RepositoryUrl: /srv/git/p}}\n    outputArtifacts: [Src]\n- name: Build\n  \
         actions:\n{build}"
    )
}

#[test]
fn inputs_must_come_from_earlier_actions() {
    let build = "  - {name: Late, runOrder: 1, actionTypeId: {category: Build, provider: commands}, configuration: {Commands: make}, inputArtifacts: [Bin]}
  - {name: Self, runOrder: 3, actionTypeId: {category: Build, provider: commands}, configuration: {Commands: make}, inputArtifacts: [Lib], outputArtifacts: [Lib]}
  - {name: Make, runOrder: 2, actionTypeId: {category: Build, provider: commands}, configuration: {Commands: make}, inputArtifacts: [Src, Later], outputArtifacts: [Bin]}
- name: Deploy
  actions:
  - {name: Ship, actionTypeId: {category: Deploy, provider: directory}, configuration: {TargetDirectory: /srv/x}, inputArtifacts: [Lib]}
  - {name: Pack, actionTypeId: {category: Build, provider: commands}, configuration: {Commands: make}, inputArtifacts: [Bin], outputArtifacts: [Later]}
";
    assert_eq!(
        errors(&pipeline_with_build(build), &Catalog::builtin()),
        [
            r#"stages[1].actions[0].inputArtifacts[0]: "Bin" is not produced by an earlier action: action "Make" in this stage produces it with a later runOrder (2, this action has 1); give this action a runOrder above 2 (line 11)"#,
            r#"stages[1].actions[1].inputArtifacts[0]: "Lib" is not produced by an earlier action: this action produces it itself (line 12)"#,
            r#"stages[1].actions[2].inputArtifacts[1]: "Later" is not produced by an earlier action: action "Pack" in stage "Deploy" produces it in a later stage; move one of the two actions (line 13)"#,
        ]
    );
}

#[test]
fn names_counts_and_namespaces() {
    let build = "  - name: Make
    namespace: variables
    actionTypeId: {category: Build, provider: commands}
    inputArtifacts: [Src, Src, Src, Src, Src, Src]
    configuration: {Script: VERY_LONG}
    agent: {os: linux}
";
    let build = build.replace("VERY_LONG", &"x".repeat(1001));
    let text =
        pipeline_with_build(&build).replace("name: p\n", "name: ''\nvariables: [{name: a.b}]\n");
    assert_eq!(
        errors(&text, &Catalog::builtin()),
        [
            "name: must not be empty; use 1 to 100 characters from A-Z a-z 0-9 . @ - _ (line 1)",
            r#"variables[0].name: "a.b" contains '.', which is not allowed; use 1 to 128 characters from A-Z a-z 0-9 @ - _ (line 2)"#,
            r#"stages[1].actions[0].namespace: "variables" is reserved; choose another namespace (line 13)"#,
            "stages[1].actions[0].inputArtifacts: Build/Sluice/commands@1 takes 1 to 5 input artifacts, \
             found 6 (line 15)",
            "stages[1].actions[0].configuration.Commands: configuration key Commands is required by plugin \
             build-commands (Shell commands, one per line, run in one `sh -e -c` session in the source \
             directory.) (line 16)",
            "stages[1].actions[0].configuration.Script: value is 1001 characters long; at most 1000 are \
             allowed (move long scripts into a file in the source) (line 16)",
            "stages[1].actions[0].configuration.Script: unknown configuration key Script (plugin \
             build-commands knows: Commands, OutputPaths, WorkingDirectory) (line 16)",
        ]
    );
}

#[test]
fn wrapped_json_paths_start_with_pipeline() {
    let text = r#"{"pipeline": {"name": "p", "stages": [{"name": "S", "actions": [
        {"name": "A", "actionTypeId": {"category": "Source", "provider": "git"}}]}]},
        "tags": [{"key": "team", "value": "web"}]}"#;
    assert_eq!(
        errors(text, &Catalog::builtin()),
        [
            "pipeline.stages: a pipeline needs at least 2 stages, found 1 (line 1)",
            "pipeline.stages[0].actions[0].outputArtifacts: Source/Sluice/git@1 takes exactly 1 output \
             artifact, found 0 (line 2)",
        ]
    );
    let warnings = parse(text, Some(Format::Json)).unwrap().warnings;
    assert_eq!(
        warnings[0].to_string(),
        "tags: tags are not stored by Sluice; ignored (line 3)"
    );
}

#[test]
fn validate_a_pipeline_built_in_code() {
    let action = |name: &str, category, provider: &str| Action {
        name: name.to_owned(),
        action_type_id: ActionTypeId {
            category,
            owner: "Sluice".to_owned(),
            provider: provider.to_owned(),
            version: "1".to_owned(),
        },
        run_order: 1,
        configuration: Default::default(),
        input_artifacts: Vec::new(),
        output_artifacts: vec!["Out".to_owned()],
        namespace: None,
        timeout_in_minutes: None,
        agent: Default::default(),
    };
    let mut pipeline = Pipeline {
        name: "p".to_owned(),
        execution_mode: Default::default(),
        pipeline_type: None,
        variables: Vec::new(),
        stages: vec![Stage {
            name: "Source".to_owned(),
            actions: vec![action("Get", Category::Source, "git")],
            before_entry: None,
            on_success: None,
            on_failure: None,
        }],
        schedules: Vec::new(),
        watch: Vec::new(),
        polling: None,
        triggers: Vec::new(),
    };
    let diagnostics = validate(&pipeline, &Catalog::builtin()).unwrap_err();
    assert_eq!(
        diagnostics.to_string(),
        "stages: a pipeline needs at least 2 stages, found 1"
    );

    let mut approve = action("Approve", Category::Approval, "manual");
    approve.output_artifacts.clear();
    pipeline.stages.push(Stage {
        name: "Gate".to_owned(),
        actions: vec![approve],
        before_entry: None,
        on_success: None,
        on_failure: None,
    });
    let approval = ProviderEntry {
        plugin: None,
        category: Category::Approval,
        owner: "Sluice".to_owned(),
        provider: "manual".to_owned(),
        version: "1".to_owned(),
        min_inputs: 0,
        max_inputs: 0,
        min_outputs: 0,
        max_outputs: 0,
    };
    let mut entries = Catalog::builtin().entries().to_vec();
    entries.push(approval);
    assert_eq!(validate(&pipeline, &Catalog::new(entries)), Ok(()));

    let diagnostics = validate(&pipeline, &Catalog::new(Vec::new())).unwrap_err();
    assert_eq!(
        diagnostics.to_string(),
        "stages[0].actions[0].actionTypeId: unknown provider Source/Sluice/git version 1; available: none\n\
         stages[1].actions[0].actionTypeId: unknown provider Approval/Sluice/manual version 1; available: none"
    );
}

#[test]
fn parse_errors_hide_validation_errors() {
    let text = "name: 'bad name'\nstages: 3\n";
    assert_eq!(
        errors(text, &Catalog::builtin()),
        ["stages: expected a list, found the number 3 (line 2)"]
    );
}

#[test]
fn unknown_fields_and_semantic_errors_are_reported_together() {
    let text = "name: p\nstages:\n  - name: S\n    actions:\n      - name: A\n        actionTypeId: {category: Source, provider: git}\n        colour: blue\n";
    let found = errors(text, &Catalog::builtin());
    assert!(
        found
            .iter()
            .any(|e| e.starts_with("stages[0].actions[0].colour: unknown field")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|e| e.starts_with("stages: a pipeline needs at least 2 stages")),
        "{found:?}"
    );
}

#[test]
fn configuration_values_are_checked_against_the_plugin_s_types() {
    let build = "  - name: Hook
    actionTypeId: {category: Deploy, provider: http}
    inputArtifacts: [Src]
    configuration: {Url: \"https://hooks.example.com/x\", Retries: three, Method: FETCH, SendArtifact: maybe, TokenSecret: \"not a name\"}
";
    let found = errors(&pipeline_with_build(build), &Catalog::builtin());
    for expected in [
        "stages[1].actions[0].configuration.Method: Method: \"FETCH\" is not one of",
        "stages[1].actions[0].configuration.Retries: Retries: \"three\" is not a whole number",
        "stages[1].actions[0].configuration.SendArtifact: SendArtifact: \"maybe\" is not true or false",
        "stages[1].actions[0].configuration.TokenSecret: TokenSecret: \"not a name\" must name a secret",
    ] {
        assert!(
            found.iter().any(|e| e.starts_with(expected)),
            "{expected:?} not in {found:#?}"
        );
    }
}
