//! Parsing: the accepted syntaxes, their equivalence, shape errors and warnings.
#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use sluice_pipeline::{
    Catalog, Category, Diagnostics, ExecutionMode, Format, Parsed, Pipeline, parse,
    parse_and_validate,
};

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(path).unwrap()
}

fn valid(name: &str) -> Parsed {
    let format = Format::from_path(name);
    parse_and_validate(&fixture(name), format, &Catalog::builtin())
        .unwrap_or_else(|e| panic!("{name} should be valid:\n{e}"))
}

fn errors(result: Result<Parsed, Diagnostics>) -> Vec<String> {
    match result {
        Ok(parsed) => panic!("expected errors, got {parsed:?}"),
        Err(diagnostics) => diagnostics.0.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn own_yaml_form() {
    let Parsed { pipeline, warnings } = valid("valid.yaml");
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(pipeline.name, "web-app");
    assert_eq!(pipeline.execution_mode, ExecutionMode::Queued);
    let stages: Vec<&str> = pipeline.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(stages, ["Source", "Build", "Test", "Deploy"]);

    let tests = &pipeline.stages[2].actions;
    assert_eq!(tests.len(), 2);
    assert!(
        tests.iter().all(|a| a.run_order == 1),
        "parallel by default"
    );
    assert_eq!(tests[1].input_artifacts, ["BuildOutput", "SourceCode"]);

    let checkout = pipeline.action("Source", "Checkout").unwrap();
    assert_eq!(checkout.action_type_id.category, Category::Source);
    assert_eq!(checkout.action_type_id.owner, "Sluice");
    assert_eq!(checkout.action_type_id.version, "1");

    let compile = pipeline.action("Build", "Compile").unwrap();
    assert_eq!(compile.input_artifacts, ["SourceCode"]);
    assert_eq!(compile.output_artifacts, ["BuildOutput"]);
    assert_eq!(compile.timeout_in_minutes, Some(30));
    assert_eq!(compile.agent["os"], "linux");
    assert!(pipeline.action("Build", "Nope").is_none());
}

#[test]
fn yaml_numbers_become_strings_as_written() {
    let compile = valid("valid.yaml").pipeline.stages[1].actions[0].clone();
    assert_eq!(
        compile.action_type_id.version, "1",
        "`version: 1` is a number in YAML"
    );
    assert_eq!(compile.configuration["OutputPaths"], "4");
    assert_eq!(compile.configuration["WorkingDirectory"], "0755", "not 755");

    let text = "name: p\nstages:\n- name: S\n  actions:\n  - name: A\n    actionTypeId: \
                {category: Source, provider: git, version: 2}\n    configuration: {Poll: true}\n";
    let action = &parse(text, None).unwrap().pipeline.stages[0].actions[0];
    assert_eq!(action.action_type_id.version, "2");
    assert_eq!(action.configuration["Poll"], "true");
}

#[test]
fn codepipeline_json_with_and_without_wrapper() {
    let bare = valid("codepipeline-bare.json");
    let wrapped = valid("codepipeline-get.json");
    assert_eq!(bare.pipeline, wrapped.pipeline);
    assert!(bare.warnings.is_empty());

    // The same pipeline as our YAML form, less the Sluice-only agent selector.
    let mut yaml = valid("valid.yaml").pipeline;
    yaml.stages[1].actions[0].agent.clear();
    assert_eq!(yaml, bare.pipeline);

    let warnings: Vec<String> = wrapped.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        warnings,
        [
            "pipeline.roleArn: AWS-only field, ignored: Sluice agents run actions with their own credentials (line 4)",
            "pipeline.artifactStore: AWS-only field, ignored: Sluice stores artifacts itself (line 5)",
            "pipeline.version: ignored: Sluice numbers pipeline versions itself (line 138)",
        ]
    );
}

#[test]
fn format_detection() {
    assert_eq!(Format::from_path("a/b.yml"), Some(Format::Yaml));
    assert_eq!(Format::from_path("b.JSON"), Some(Format::Json));
    assert_eq!(Format::from_path("Pipelinefile"), None);
    assert_eq!(Format::detect("  \n{\"name\": 1}"), Format::Json);
    assert_eq!(Format::detect("name: x"), Format::Yaml);
    let json = fixture("codepipeline-bare.json");
    assert_eq!(
        parse(&json, None).unwrap(),
        parse(&json, Some(Format::Yaml)).unwrap()
    );
}

#[test]
fn round_trip_through_canonical_json() {
    for name in [
        "valid.yaml",
        "codepipeline-bare.json",
        "codepipeline-get.json",
    ] {
        let pipeline = valid(name).pipeline;
        let json = pipeline.to_json();
        let again = parse(&json, None).unwrap();
        assert_eq!(again.pipeline, pipeline, "{name}");
        assert!(again.warnings.is_empty());
        let decoded: Pipeline = serde_json::from_str(&json).unwrap();
        assert_eq!(decoded, pipeline, "{name}");
    }
}

#[test]
fn canonical_json_shape() {
    let pipeline = valid("valid.yaml").pipeline;
    let json: serde_json::Value = serde_json::from_str(&pipeline.to_json()).unwrap();
    let compile = &json["stages"][1]["actions"][0];
    assert_eq!(
        compile["inputArtifacts"],
        serde_json::json!([{"name": "SourceCode"}])
    );
    assert_eq!(compile["actionTypeId"]["version"], "1");
    assert_eq!(compile["agent"]["os"], "linux");
    assert_eq!(json["executionMode"], "QUEUED");
    let checkout = json["stages"][0]["actions"][0].as_object().unwrap();
    assert!(!checkout.contains_key("agent"), "empty agent is omitted");
    assert!(!checkout.contains_key("inputArtifacts"));
}

#[test]
fn unknown_fields_at_three_levels_reported_together() {
    let text = r#"{"name": "p", "stage": [], "stages": [
        {"name": "S", "action": {}, "actions": [
            {"name": "A", "actionTypeId": {"category": "Source", "provider": "git"},
             "confguration": {"Url": "x"}, "outputArtifacts": [{"name": "Out", "files": ["a"]}]}]}]}"#;
    assert_eq!(
        errors(parse(text, None)),
        [
            "stage: unknown field; expected one of: name, executionMode, pipelineType, variables, \
             stages, schedules, watch, polling, triggers, roleArn, artifactStore, artifactStores, version; \
             did you mean stages? (line 1)",
            "stages[0].action: unknown field; expected one of: name, actions, beforeEntry, \
             onSuccess, onFailure, blockers; did you mean actions? (line 2)",
            "stages[0].actions[0].confguration: unknown field; expected one of: name, actionTypeId, \
             runOrder, configuration, inputArtifacts, outputArtifacts, namespace, timeoutInMinutes, \
             agent, roleArn, region; did you mean configuration? (line 4)",
            "stages[0].actions[0].outputArtifacts[0].files: unknown field; expected one of: name (line 4)",
        ]
    );
}

#[test]
fn shape_errors_are_all_reported_with_lines() {
    let text = "\
name: 5
executionMode: FAST
stages:
  - name: Source
    actions:
      - actionTypeId: {category: build, provider: git}
        runOrder: -1
        configuration:
          Nested: {a: b}
          Empty:
        inputArtifacts: [3]
  - 7
";
    assert_eq!(
        errors(parse(text, Some(Format::Yaml))),
        [
            "name: expected a string, found the number 5 (line 1)",
            "executionMode: unknown value \"FAST\"; expected one of: SUPERSEDED, QUEUED, PARALLEL (line 2)",
            "stages[0].actions[0].name: missing required field (line 6)",
            "stages[0].actions[0].actionTypeId.category: unknown value \"build\"; expected one of: \
             Source, Build, Test, Deploy, Approval, Invoke, Compute (line 6)",
            "stages[0].actions[0].runOrder: expected a whole number, found the number -1 (line 7)",
            "stages[0].actions[0].configuration.Nested: expected a string, found a mapping; \
             to pass structured data, write it as a JSON string (line 9)",
            "stages[0].actions[0].configuration.Empty: expected a string, found nothing (null); \
             write \"\" for an empty value (line 10)",
            "stages[0].actions[0].inputArtifacts[0]: expected an artifact name or {name: ...}, \
             found the number 3 (line 11)",
            "stages[1]: expected a mapping, found the number 7 (line 12)",
        ]
    );
}

#[test]
fn whole_document_errors() {
    let yaml = errors(parse("name: x\nstages: [\n", None));
    assert_eq!(
        yaml,
        [
            "invalid YAML: while parsing a node, did not find expected node content (line 3, column 1)"
        ]
    );
    let json = errors(parse("{\"name\": \"x\", \"stages\": [}", None));
    assert_eq!(json, ["invalid JSON: expected value at line 1 column 26"]);
    let empty = errors(parse("# nothing\n", None));
    assert_eq!(
        empty,
        ["the document is empty; expected a pipeline definition"]
    );
    let two = errors(parse("name: a\n---\nname: b\n", None));
    assert_eq!(
        two,
        ["found 2 YAML documents; a pipeline file holds exactly one"]
    );
    let list = errors(parse("- a\n", None));
    assert_eq!(list, ["expected a mapping, found a list"]);
}

#[test]
fn duplicate_yaml_keys() {
    let text = "name: a\nname: b\nstages: []\n";
    assert_eq!(
        errors(parse(text, None)),
        ["name: key appears twice (again on line 2); keep one (line 1)"]
    );
}

#[test]
fn ignored_fields_warn_at_every_level() {
    let text = "\
name: p
roleArn: arn:aws:iam::123456789012:role/x
artifactStore: {type: S3, location: bucket}
triggers: []
stages:
  - name: S
    blockers: [{name: b, type: Schedule}]
    actions:
      - name: A
        actionTypeId: {category: Source, provider: git}
        region: eu-west-1
        outputArtifacts: [Out]
";
    let warnings: Vec<String> = parse(text, None)
        .unwrap()
        .warnings
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        warnings,
        [
            "roleArn: AWS-only field, ignored: Sluice agents run actions with their own credentials (line 2)",
            "artifactStore: AWS-only field, ignored: Sluice stores artifacts itself (line 3)",
            "stages[0].blockers: blockers are not supported yet; ignored (line 7)",
            "stages[0].actions[0].region: AWS-only field, ignored: choose where an action runs with \
             `agent` labels (line 11)",
        ]
    );
}
