//! Importing CodePipeline JSON and CloudFormation templates: the converted definitions,
//! every diagnostic with its path and line, and that what comes out validates.
#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use sluice_pipeline::import::{
    Approvals, DisabledTransition, Import, ImportError, ImportOptions, ImportedPipeline, MapRule,
    SourceKind, import,
};
use sluice_pipeline::{
    Catalog, Category, ConditionResult, Format, ProviderEntry, RetryMode, parse, parse_and_validate,
};

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/import/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(path).unwrap()
}

fn options(maps: &[&str], params: &[(&str, &str)], approvals: Approvals) -> ImportOptions {
    ImportOptions {
        params: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        maps: maps.iter().map(|m| m.parse().unwrap()).collect(),
        approvals,
    }
}

/// The built-in catalog with a manual approval provider, whether or not the built-in
/// one has it yet.
fn with_approvals() -> Catalog {
    let builtin = Catalog::builtin();
    if builtin
        .entries()
        .iter()
        .any(|e| e.category == Category::Approval)
    {
        return builtin;
    }
    let mut entries = builtin.entries().to_vec();
    entries.push(ProviderEntry {
        category: Category::Approval,
        owner: "Sluice".to_owned(),
        provider: "manual".to_owned(),
        version: "1".to_owned(),
        min_inputs: 0,
        max_inputs: 0,
        min_outputs: 0,
        max_outputs: 0,
        plugin: None,
    });
    Catalog::new(entries)
}

fn without_approvals() -> Catalog {
    let entries = Catalog::builtin()
        .entries()
        .iter()
        .filter(|e| e.category != Category::Approval)
        .cloned()
        .collect();
    Catalog::new(entries)
}

fn run_with(name: &str, options: &ImportOptions, catalog: &Catalog) -> Import {
    import(&fixture(name), Format::from_path(name), options, catalog)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn run(name: &str, maps: &[&str], params: &[(&str, &str)], approvals: Approvals) -> Import {
    run_with(name, &options(maps, params, approvals), &with_approvals())
}

fn inline(text: &str, maps: &[&str], params: &[(&str, &str)]) -> Import {
    import(
        text,
        None,
        &options(maps, params, Approvals::Keep),
        &with_approvals(),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn lines(diagnostics: &[sluice_pipeline::Diagnostic]) -> Vec<String> {
    diagnostics.iter().map(ToString::to_string).collect()
}

fn only(imported: &Import) -> &ImportedPipeline {
    assert_eq!(imported.pipelines.len(), 1, "{imported:#?}");
    &imported.pipelines[0]
}

/// The converted YAML reads back to the same pipeline and validates.
fn assert_valid(p: &ImportedPipeline, catalog: &Catalog) {
    assert!(p.is_ok(), "{:#?}\n{}", p.errors, p.yaml);
    let back = parse(&p.yaml, Some(Format::Yaml)).unwrap();
    assert_eq!(back.pipeline, p.pipeline);
    assert!(back.warnings.is_empty(), "{:?}", back.warnings);
    if let Err(e) = parse_and_validate(&p.yaml, Some(Format::Yaml), catalog) {
        panic!("{e}\n{}", p.yaml);
    }
}

const SHOP_MAPS: &[&str] = &[
    "repo:shop=https://git.example.com/shop.git",
    "buildspec:shop-deploy=deploy/buildspec.yml",
];

#[test]
fn get_pipeline_json_maps_codecommit_codebuild_approval_and_deploy() {
    let imported = run("get-pipeline.json", SHOP_MAPS, &[], Approvals::Keep);
    assert_eq!(imported.source, SourceKind::CodePipeline);
    assert!(imported.errors.is_empty() && imported.warnings.is_empty());
    let p = only(&imported);
    assert_eq!(p.origin, "pipeline");
    assert_eq!(
        p.yaml,
        r##"name: shop
pipelineType: V2
stages:
  - name: Source
    actions:
      - name: Source
        actionTypeId: {category: Source, owner: Sluice, provider: git, version: "1"}
        namespace: SourceVariables
        configuration:
          BranchName: main
          RepositoryUrl: https://git.example.com/shop.git
        outputArtifacts: [SourceArtifact]
  - name: Build
    actions:
      - name: Build
        actionTypeId: {category: Build, owner: Sluice, provider: buildspec, version: "1"}
        namespace: BuildVariables
        configuration:
          EnvironmentVariables: "[{\"name\":\"STAGE\",\"value\":\"prod\",\"type\":\"PLAINTEXT\"}]"
          SourceVersion: "#{SourceVariables.CommitId}"
        inputArtifacts: [SourceArtifact]
        outputArtifacts: [BuildArtifact]
  - name: Approve
    actions:
      - name: Approve
        actionTypeId: {category: Approval, owner: Sluice, provider: manual, version: "1"}
        configuration:
          CustomData: "Deploy #{SourceVariables.CommitId} to production?"
  - name: Deploy
    actions:
      - name: Deploy
        actionTypeId: {category: Build, owner: Sluice, provider: buildspec, version: "1"}
        configuration:
          BuildspecPath: deploy/buildspec.yml
        inputArtifacts: [BuildArtifact, SourceArtifact]
"##
    );
    assert_eq!(
        lines(&p.warnings),
        [
            "pipeline.roleArn: AWS-only, dropped: Sluice agents run actions with their own credentials (line 4)",
            "pipeline.artifactStore: AWS-only, dropped: Sluice keeps artifacts in its own store (the controller's data dir) (line 5)",
            "pipeline.artifactStore.encryptionKey: dropped: Sluice does not encrypt artifacts with a KMS key; protect the controller's data dir instead (line 8)",
            "pipeline.stages[0].actions[0].region: AWS-only, dropped: an action runs on an agent; choose agents with `agent` labels (line 38)",
            "pipeline.stages[1].actions[0].configuration.ProjectName: dropped: Sluice runs the buildspec on an agent, not in CodeBuild project \"shop-build\"; the project's build image, compute type, service role and cache do not apply (choose agents with `agent` labels) (line 57)",
            "pipeline.stages[1].actions[0].configuration.ProjectName: the buildspec of project \"shop-build\" is not in this file: buildspec.yml in the primary input is used (CodeBuild's default); if the project names another, pass --map buildspec:shop-build=PATH (line 57)",
            "pipeline.stages[1].actions[0].region: AWS-only, dropped: an action runs on an agent; choose agents with `agent` labels (line 69)",
            "pipeline.stages[2].actions[0].configuration.NotificationArn: dropped: Sluice sends no SNS notifications; the approval's NotificationUrl takes an http(s) URL the controller POSTs the pending approval to (line 88)",
            "pipeline.stages[2].actions[0].region: AWS-only, dropped: an action runs on an agent; choose agents with `agent` labels (line 92)",
            "pipeline.stages[3].actions[0].configuration.ProjectName: dropped: Sluice runs the buildspec on an agent, not in CodeBuild project \"shop-deploy\"; the project's build image, compute type, service role and cache do not apply (choose agents with `agent` labels) (line 110)",
            "pipeline.stages[3].actions[0].region: AWS-only, dropped: an action runs on an agent; choose agents with `agent` labels (line 121)",
        ]
    );
    assert_valid(p, &with_approvals());
}

#[test]
fn approvals_can_be_left_out() {
    let imported = run("get-pipeline.json", SHOP_MAPS, &[], Approvals::Drop);
    let p = only(&imported);
    let stages: Vec<&str> = p.pipeline.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(stages, ["Source", "Build", "Deploy"]);
    let warnings = lines(&p.warnings);
    for expected in [
        "pipeline.stages[2]: stage left out: it held only manual approvals, which --approvals drop leaves out (line 74)",
        "pipeline.stages[2].actions[0].actionTypeId: left out (--approvals drop): runs no longer wait for a person's approval here (line 79)",
    ] {
        assert!(
            warnings.contains(&expected.to_owned()),
            "{expected}\n{warnings:#?}"
        );
    }
    // Without an approval provider too.
    assert_valid(p, &without_approvals());
}

#[test]
fn approvals_without_a_provider_are_kept_and_reported() {
    let imported = run_with(
        "get-pipeline.json",
        &options(SHOP_MAPS, &[], Approvals::Keep),
        &without_approvals(),
    );
    let p = only(&imported);
    assert_eq!(
        lines(&p.errors),
        [
            "pipeline.stages[2].actions[0].actionTypeId: this Sluice has no manual approval provider: the \
          action is kept as Approval/Sluice/manual, which does not validate here; pass --approvals drop \
          to import without this gate (runs then no longer wait for a person) (line 79)"
        ]
    );
    assert!(p.yaml.contains(
        "actionTypeId: {category: Approval, owner: Sluice, provider: manual, version: \"1\"}"
    ));
    // The validation of that action is not repeated.
    assert!(p.invalid.is_empty(), "{:#?}", p.invalid);
    assert!(!imported.is_ok());
}

#[test]
fn unmapped_sources_say_what_to_pass_and_stay_as_written() {
    let imported = run("get-pipeline.json", &[], &[], Approvals::Keep);
    let p = only(&imported);
    assert_eq!(
        lines(&p.errors),
        [
            "pipeline.stages[0].actions[0].configuration.RepositoryName: CodeCommit repository \"shop\" has no \
          git URL in its configuration: pass --map repo:shop=URL (e.g. https://git.example.com/shop.git), or \
          --map 'repo:*=https://git.example.com/{name}.git' for every repository (line 30)"
        ]
    );
    let source = &p.pipeline.stages[0].actions[0];
    assert_eq!(source.action_type_id.owner, "AWS");
    assert_eq!(source.action_type_id.provider, "CodeCommit");
    assert_eq!(source.configuration["RepositoryName"], "shop");
    // Without a mapped source there is no commit to hand to the build.
    assert!(
        !p.pipeline.stages[1].actions[0]
            .configuration
            .contains_key("SourceVersion")
    );
    assert!(p.invalid.is_empty(), "{:#?}", p.invalid);

    // A wildcard rule maps every repository.
    let imported = run(
        "get-pipeline.json",
        &["repo:*=ssh://git@git.example.com/{name}.git"],
        &[],
        Approvals::Keep,
    );
    let source = &only(&imported).pipeline.stages[0].actions[0];
    assert_eq!(
        source.configuration["RepositoryUrl"],
        "ssh://git@git.example.com/shop.git"
    );
}

#[test]
fn bare_declaration_has_paths_without_the_wrapper() {
    let mut wrapped: serde_json::Value =
        serde_json::from_str(&fixture("get-pipeline.json")).unwrap();
    let bare = serde_json::to_string_pretty(&wrapped["pipeline"].take()).unwrap();
    let imported = import(
        &bare,
        None,
        &options(SHOP_MAPS, &[], Approvals::Keep),
        &with_approvals(),
    )
    .unwrap();
    let p = only(&imported);
    assert_eq!(p.origin, "");
    let warnings = lines(&p.warnings);
    assert!(
        warnings.iter().any(|w| w.starts_with(
            "roleArn: AWS-only, dropped: Sluice agents run actions with their own credentials (line "
        )),
        "{warnings:#?}"
    );
    assert!(warnings.iter().all(|w| !w.starts_with("pipeline.")));
    let wrapped = run("get-pipeline.json", SHOP_MAPS, &[], Approvals::Keep);
    assert_eq!(p.yaml, wrapped.pipelines[0].yaml);
}

#[test]
fn sluice_definitions_pass_through() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/codepipeline-get.json"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let imported = import(&text, None, &ImportOptions::default(), &Catalog::builtin()).unwrap();
    let p = only(&imported);
    assert!(p.errors.is_empty(), "{:#?}", p.errors);
    assert_eq!(
        p.pipeline,
        parse(&text, Some(Format::Json)).unwrap().pipeline
    );
    assert_valid(p, &Catalog::builtin());
}

#[test]
fn cloudformation_yaml_resolves_parameters_conditions_and_mappings() {
    let imported = run(
        "template.yaml",
        &["lambda:shop-staging-publish=Source:tools/publish.wasm"],
        &[],
        Approvals::Keep,
    );
    assert_eq!(imported.source, SourceKind::CloudFormation);
    let p = only(&imported);
    assert_eq!(p.origin, "Resources.Pipeline");
    // IsProduction is false: the approval stage is AWS::NoValue and disappears; the
    // Domain variable needs another stack's export and is left out with an error.
    assert_eq!(
        p.yaml,
        r##"name: shop-staging
pipelineType: V2
stages:
  - name: Source
    actions:
      - name: Checkout
        actionTypeId: {category: Source, owner: Sluice, provider: git, version: "1"}
        namespace: SourceVariables
        configuration:
          BranchName: main
          RepositoryUrl: https://github.com/example-org/shop.git
        outputArtifacts: [Source]
  - name: Build
    actions:
      - name: Build
        actionTypeId: {category: Build, owner: Sluice, provider: buildspec, version: "1"}
        configuration:
          BuildspecPath: ci/buildspec-staging.yml
          EnvironmentVariables: "[{\"name\":\"NODE_ENV\",\"value\":\"production\",\"type\":\"PLAINTEXT\"},{\"name\":\"STAGE\",\"value\":\"staging\",\"type\":\"PLAINTEXT\"}]"
          SourceVersion: "#{SourceVariables.CommitId}"
        inputArtifacts: [Source]
        outputArtifacts: [Site]
        timeoutInMinutes: 30
  - name: Deploy
    actions:
      - name: Publish
        actionTypeId: {category: Invoke, owner: Sluice, provider: wasm, version: "1"}
        configuration:
          ComponentPath: tools/publish.wasm
          Parameters: UserParameters={"site":"staging"}
        inputArtifacts: [Source, Site]
"##
    );
    assert_eq!(
        lines(&p.errors),
        [
            "Resources.Pipeline.Properties.Variables[0].DefaultValue: cannot be resolved offline: !ImportValue \
          shop-domain: it is another stack's export, known only to AWS; pass --map \
          import:shop-domain=VALUE (line 80)"
        ]
    );
    assert_eq!(
        lines(&p.warnings),
        [
            "Resources.Pipeline.Properties.RoleArn: AWS-only, dropped: Sluice agents run actions with their own credentials (its value was not resolved: !GetAtt PipelineRole.Arn: PipelineRole.Arn is an attribute of a resource, known only once AWS creates it) (line 73)",
            "Resources.Pipeline.Properties.ArtifactStore: AWS-only, dropped: Sluice keeps artifacts in its own store (the controller's data dir) (its value was not resolved: !Ref ArtifactBucket: resource ArtifactBucket (AWS::S3::Bucket) sets no BucketName, so AWS generates its name when it creates it) (line 74)",
            "Resources.Pipeline.Properties.RestartExecutionOnUpdate: dropped: Sluice does not start a run when a pipeline is updated; start one with `sluice pipeline start` (line 77)",
            "Resources.Pipeline.Properties.Stages[0].Actions[0].ActionTypeId: the repository URL is taken to be https://github.com/example-org/shop.git; agents need read access to it (pass --map repo:example-org/shop=URL for another address) (line 86)",
            "Resources.Pipeline.Properties.Stages[0].Actions[0].Configuration.OAuthToken: dropped: the GitHub OAuth token is a secret and is not copied; Sluice's git source clones with the agent's own credentials (an ssh key or a git credential helper of the user the agent runs as), so give the agents read access to the repository (line 95)",
            "Resources.Pipeline.Properties.Stages[1].Actions[0].Configuration.ProjectName: dropped: Sluice runs the buildspec on an agent, not in CodeBuild project \"shop-staging-build\" (resource BuildProject of this template); the project's build image, compute type, service role and cache do not apply (choose agents with `agent` labels) (line 105)",
            "Resources.Pipeline.Properties.Stages[3].Actions[0].Configuration.UserParameters: passed to the component as its parameter UserParameters (line 129)",
            "Resources.Pipeline.Properties.Tags: dropped: Sluice does not store tags (line 131)",
        ]
    );
    // Everything but the unresolved variable validates.
    assert!(p.invalid.is_empty(), "{:#?}", p.invalid);
    assert!(!imported.is_ok());
}

#[test]
fn cloudformation_yaml_condition_keeps_the_approval_stage_in_production() {
    let secret = "ghp_0123456789abcdefSECRET";
    let imported = run(
        "template.yaml",
        &[
            "lambda:shop-production-publish=Source:tools/publish.wasm",
            "import:shop-domain=shop.example.com",
        ],
        &[("Environment", "production"), ("GitHubToken", secret)],
        Approvals::Keep,
    );
    let p = only(&imported);
    assert!(imported.is_ok(), "{:#?}", p.errors);
    assert_eq!(p.pipeline.name, "shop-production");
    let stages: Vec<&str> = p.pipeline.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(stages, ["Source", "Build", "Approve", "Deploy"]);
    let approve = p.pipeline.action("Approve", "ReleaseManager").unwrap();
    assert_eq!(
        approve.configuration["CustomData"],
        "Publish production from #{SourceVariables.CommitId}?"
    );
    let checkout = p.pipeline.action("Source", "Checkout").unwrap();
    assert_eq!(checkout.configuration["BranchName"], "release");
    let build = p.pipeline.action("Build", "Build").unwrap();
    assert_eq!(
        build.configuration["BuildspecPath"],
        "ci/buildspec-production.yml"
    );
    assert_eq!(build.timeout_in_minutes, Some(60));
    assert_eq!(
        p.pipeline.variables[0].default_value.as_deref(),
        Some("shop.example.com")
    );
    // The OAuth token given as a parameter goes nowhere: not in the definition, not in
    // any message.
    assert!(!format!("{imported:?}").contains(secret));
    assert_valid(p, &with_approvals());

    // Left out on request.
    let imported = run(
        "template.yaml",
        &[
            "lambda:shop-production-publish=Source:tools/publish.wasm",
            "import:shop-domain=shop.example.com",
        ],
        &[("Environment", "production")],
        Approvals::Drop,
    );
    let p = only(&imported);
    assert!(lines(&p.warnings).contains(
        &"Resources.Pipeline.Properties.Stages[2][\"Fn::If\"][1]: stage left out: it held only manual \
          approvals, which --approvals drop leaves out (line 116)"
            .to_owned()
    ));
    assert_valid(p, &without_approvals());
}

const INVENTORY_MAPS: &[&str] = &[
    "repo:*=https://git.example.com/{name}.git",
    "s3:inventory-fixtures/fixtures.zip=/srv/fixtures",
];

#[test]
fn cloudformation_json_with_fn_forms() {
    let imported = run("template.json", INVENTORY_MAPS, &[], Approvals::Keep);
    let p = only(&imported);
    assert_eq!(
        p.yaml,
        r##"name: inventory-main
executionMode: QUEUED
stages:
  - name: Source
    actions:
      - name: Code
        actionTypeId: {category: Source, owner: Sluice, provider: git, version: "1"}
        namespace: Src
        configuration:
          BranchName: main
          RepositoryUrl: https://git.example.com/example/inventory.git
        outputArtifacts: [Code]
      - name: Fixtures
        actionTypeId: {category: Source, owner: Sluice, provider: directory, version: "1"}
        configuration:
          Path: /srv/fixtures
        outputArtifacts: [Fixtures]
  - name: Test
    actions:
      - name: unit-tests
        actionTypeId: {category: Test, owner: Sluice, provider: buildspec, version: "1"}
        configuration:
          EnvironmentVariables: "[{\"name\":\"SUITES\",\"value\":\"${SUITES}\",\"type\":\"PLAINTEXT\"}]"
          SourceVersion: "#{Src.CommitId}"
        inputArtifacts: [Code, Fixtures]
  - name: Install
    actions:
      - name: Copy
        actionTypeId: {category: Build, owner: Sluice, provider: commands, version: "1"}
        runOrder: 2
        configuration:
          Commands: |-
            rsync -a --delete ./ /srv/inventory/
            echo installed #{Src.CommitId}
        inputArtifacts: [Code]
"##
    );
    assert!(p.errors.is_empty(), "{:#?}", p.errors);
    assert_eq!(
        lines(&p.warnings),
        [
            "Resources.Pipeline.Properties.RoleArn: AWS-only, dropped: Sluice agents run actions with their own credentials (its value was not resolved: ${AWS::AccountId} in !Sub: !Ref AWS::AccountId: AWS sets AWS::AccountId when it deploys the stack; pass --param AWS::AccountId=VALUE) (line 28)",
            "Resources.Pipeline.Properties.ArtifactStores: AWS-only, dropped: Sluice keeps artifacts in its own store (the controller's data dir) (its value was not resolved: !Ref AWS::Region: AWS sets AWS::Region when it deploys the stack; pass --param AWS::Region=VALUE) (line 29)",
            "Resources.Pipeline.Properties.ArtifactStores[0].ArtifactStore.EncryptionKey: dropped: Sluice does not encrypt artifacts with a KMS key; protect the controller's data dir instead (line 35)",
            "Resources.Pipeline.Properties.Stages[0].Actions[0].Configuration.ConnectionArn: dropped: Sluice's git source clones with the agent's own credentials, not through a CodeStar connection; give the agents read access to the repository (its value was not resolved: !Ref ConnectionArn: parameter ConnectionArn has no Default; pass --param ConnectionArn=VALUE) (line 48)",
            "Resources.Pipeline.Properties.Stages[1].Actions[0].Configuration.ProjectName: dropped: Sluice runs the buildspec on an agent, not in CodeBuild project \"inventory-tests\"; the project's build image, compute type, service role and cache do not apply (choose agents with `agent` labels) (line 76)",
            "Resources.Pipeline.Properties.Stages[1].Actions[0].Configuration.ProjectName: the buildspec of project \"inventory-tests\" is not in this file: buildspec.yml in the primary input is used (CodeBuild's default); if the project names another, pass --map buildspec:inventory-tests=PATH (line 76)",
        ]
    );
    assert_valid(p, &with_approvals());
}

#[test]
fn cloudformation_json_condition_removes_the_install_stage() {
    let imported = run(
        "template.json",
        &[],
        &[("Branch", "develop"), ("AWS::Region", "eu-west-1")],
        Approvals::Keep,
    );
    let p = only(&imported);
    assert_eq!(p.pipeline.name, "inventory-develop");
    let stages: Vec<&str> = p.pipeline.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(stages, ["Source", "Test"]);
    assert_eq!(
        lines(&p.errors),
        [
            "Resources.Pipeline.Properties.Stages[0].Actions[0].Configuration.FullRepositoryId: connection repository \"example/inventory\" has no git URL in its configuration: pass --map repo:example/inventory=URL (e.g. https://git.example.com/example/inventory.git), or --map 'repo:*=https://git.example.com/{name}.git' for every repository (line 49)",
            "Resources.Pipeline.Properties.Stages[0].Actions[1].Configuration.S3Bucket: Sluice has no S3 source: it becomes a directory source, which snapshots a directory on the agent machine; pass --map s3:inventory-fixtures/fixtures.zip=/absolute/dir (a directory holding what the object's zip holds) (line 61)",
        ]
    );
    // With the region given, the artifact store resolves and is only dropped.
    assert!(lines(&p.warnings).contains(
        &"Resources.Pipeline.Properties.ArtifactStores: AWS-only, dropped: Sluice keeps artifacts in its own \
          store (the controller's data dir) (line 29)"
            .to_owned()
    ));
}

#[test]
fn two_pipelines_in_one_template() {
    let imported = run(
        "two-pipelines.yaml",
        &[
            "repo:billing=ssh://git@git.example.com/billing.git",
            "buildspec:*=ci/buildspec.yml",
        ],
        &[],
        Approvals::Keep,
    );
    assert!(imported.is_ok(), "{imported:#?}");
    let names: Vec<(&str, &str)> = imported
        .pipelines
        .iter()
        .map(|p| (p.pipeline.name.as_str(), p.origin.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("billing-ci", "Resources.CiPipeline"),
            ("billing-release", "Resources.ReleasePipeline")
        ]
    );
    assert_eq!(
        imported.pipelines[1].yaml,
        r##"name: billing-release
stages:
  - name: Source
    actions:
      - name: Source
        actionTypeId: {category: Source, owner: Sluice, provider: git, version: "1"}
        namespace: Release
        configuration:
          BranchName: release
          RepositoryUrl: ssh://git@git.example.com/billing.git
        outputArtifacts: [Src]
  - name: Release
    actions:
      - name: Package
        actionTypeId: {category: Build, owner: Sluice, provider: buildspec, version: "1"}
        configuration:
          BuildspecPath: ci/buildspec.yml
          EnvironmentVariables: "[{\"name\":\"VERSION\",\"value\":\"#{Release.CommitId}\",\"type\":\"PLAINTEXT\"}]"
          SourceVersion: "#{Release.CommitId}"
        inputArtifacts: [Src]
        outputArtifacts: [Package]
"##
    );
    // The CI pipeline's source had no namespace: it gets one for the build's commit.
    let ci = &imported.pipelines[0].pipeline;
    assert_eq!(
        ci.stages[0].actions[0].namespace.as_deref(),
        Some("SourceVariables")
    );
    assert_eq!(
        ci.stages[1].actions[0].configuration["SourceVersion"],
        "#{SourceVariables.CommitId}"
    );
    assert_eq!(
        imported.pipelines[1].disabled_transitions,
        [DisabledTransition {
            stage: "Release".to_owned(),
            reason: "Release freeze until the audit ends".to_owned()
        }]
    );
    assert!(lines(&imported.pipelines[1].warnings).contains(
        &"Resources.ReleasePipeline.Properties.DisableInboundStageTransitions[0]: not part of the definition: \
          the transition into stage \"Release\" is disabled once the pipeline is created (`sluice pipeline \
          import` does it; after --dry-run, run `sluice pipeline disable-transition billing-release Release \
          --reason \"Release freeze until the audit ends\"`) (line 37)"
            .to_owned()
    ));
    for p in &imported.pipelines {
        assert_valid(p, &with_approvals());
    }
}

#[test]
fn broken_files_report_line_and_column() {
    let error = |name: &str| {
        import(
            &fixture(name),
            Format::from_path(name),
            &ImportOptions::default(),
            &Catalog::builtin(),
        )
        .unwrap_err()
        .to_string()
    };
    assert_eq!(
        error("broken.json"),
        "invalid JSON: expected `,` or `]` at line 9 column 13"
    );
    assert_eq!(
        error("broken-indent.yaml"),
        "invalid YAML: while parsing a block mapping, did not find expected key (line 14, column 24)"
    );
    let tag = import(
        "Resources:\n  P:\n    Type: AWS::CodePipeline::Pipeline\n    Properties: {Name: !Reff x}\n",
        None,
        &ImportOptions::default(),
        &Catalog::builtin(),
    )
    .unwrap_err();
    assert!(
        tag.to_string()
            .starts_with("invalid YAML: unknown tag !Reff (line 4, column 30); CloudFormation's short forms are !Ref, !Condition, !Sub"),
        "{tag}"
    );
}

#[test]
fn documents_that_are_not_pipelines() {
    let error = |text: &str| {
        import(text, None, &ImportOptions::default(), &Catalog::builtin()).unwrap_err()
    };
    assert_eq!(
        error("- 1\n"),
        ImportError::NotAPipeline(
            "the document is a list; expected a CodePipeline definition (`pipeline` or `stages` at the top) \
             or a CloudFormation template (`Resources` at the top)"
                .to_owned()
        )
    );
    assert_eq!(
        error("Resources: {Bucket: {Type: AWS::S3::Bucket}}").to_string(),
        "the CloudFormation template has no AWS::CodePipeline::Pipeline resource (its resource types: AWS::S3::Bucket)"
    );
    assert_eq!(
        error("{\"name\": \"x\"}").to_string(),
        "not a CodePipeline definition or CloudFormation template: expected `pipeline`, `stages` or `Resources` \
         at the top, found name"
    );
}

/// A template whose first action needs values that only AWS knows.
const UNRESOLVED: &str = "\
Parameters:
  Env: {Type: String, AllowedValues: [dev, prod], Default: dev}
  VpcId: {Type: 'AWS::SSM::Parameter::Value<String>', Default: /shop/vpc}
Conditions:
  Never: !Equals [a, b]
Resources:
  Repo:
    Type: AWS::CodeCommit::Repository
    Properties: {RepositoryName: !Sub '${AWS::StackName}-repo'}
  Off:
    Type: AWS::CodePipeline::Pipeline
    Condition: Never
    Properties: {}
  P:
    Type: AWS::CodePipeline::Pipeline
    Properties:
      Name: !Join ['-', [shop, !Ref Env]]
      Stages:
        - Name: Source
          Actions:
            - Name: Get
              ActionTypeId: {Category: Source, Owner: AWS, Provider: CodeCommit, Version: 1}
              Configuration:
                RepositoryName: !GetAtt Repo.Name
                BranchName: !ImportValue shared-branch
              OutputArtifacts: [{Name: Src}, !Ref AWS::NoValue]
        - Name: Ship
          Actions:
            - Name: Deploy
              ActionTypeId: {Category: Deploy, Owner: AWS, Provider: CodeDeploy, Version: 1}
              Configuration: {ApplicationName: shop, DeploymentGroupName: !GetAtt Group.Name}
              InputArtifacts: [{Name: Src}]
              Colour: blue
            - Name: Notify
              ActionTypeId: {Category: Build, Owner: AWS, Provider: CodeBuild, Version: 1}
              Configuration:
                ProjectName: notify
                EnvironmentVariables: !Sub '[{\"name\":\"VPC\",\"value\":\"${VpcId}\",\"type\":\"PLAINTEXT\"}]'
              InputArtifacts: [{Name: Src}]
              RunOrder: 2
";

#[test]
fn unresolvable_values_are_reported_with_their_paths() {
    let imported = inline(UNRESOLVED, &["buildspec:*=buildspec.yml"], &[]);
    let p = only(&imported);
    assert_eq!(p.pipeline.name, "shop-dev");
    assert_eq!(
        lines(&p.errors),
        [
            "Resources.P.Properties.Stages[0].Actions[0].Configuration.RepositoryName: CodeCommit repository \"Repo\" (Repo is !GetAtt Repo.Name: the name of resource Repo (AWS::CodeCommit::Repository) is ${AWS::StackName} in !Sub: !Ref AWS::StackName: AWS sets AWS::StackName when it deploys the stack; pass --param AWS::StackName=VALUE) has no git URL in its configuration: pass --map repo:Repo=URL (e.g. https://git.example.com/Repo.git), or --map 'repo:*=https://git.example.com/{name}.git' for every repository (line 24)",
            "Resources.P.Properties.Stages[0].Actions[0].Configuration.BranchName: cannot be resolved offline: !ImportValue shared-branch: it is another stack's export, known only to AWS; pass --map import:shared-branch=VALUE (line 25)",
            "Resources.P.Properties.Stages[1].Actions[0].ActionTypeId: Deploy/AWS/CodeDeploy version 1 has no Sluice equivalent: rewrite it as a directory or http deploy, or as a buildspec or commands action that runs the deployment, or install a plugin that provides it; the action is kept as it is (line 30)",
            "Resources.P.Properties.Stages[1].Actions[0].Colour: unknown field; expected one of: Name, ActionTypeId, RunOrder, Configuration, InputArtifacts, OutputArtifacts, Namespace, RoleArn, Region, TimeoutInMinutes, Commands, OutputVariables, EnvironmentVariables (line 33)",
            "Resources.P.Properties.Stages[1].Actions[1].Configuration.EnvironmentVariables: cannot be resolved offline: ${VpcId} in !Sub: !Ref VpcId: parameter VpcId (AWS::SSM::Parameter::Value<String>) is read from SSM Parameter Store when AWS deploys the stack; pass --param VpcId=VALUE (line 38)",
        ]
    );
    assert_eq!(
        lines(&imported.warnings),
        [
            "Resources.Off.Condition: not imported: its condition Never is false with these parameters (line 12)"
        ]
    );
    // Unmapped actions stay as written, without what could not be resolved; the
    // validation does not repeat what the errors say.
    let deploy = &p.pipeline.stages[1].actions[0];
    assert_eq!(deploy.action_type_id.provider, "CodeDeploy");
    assert_eq!(
        deploy.configuration.keys().collect::<Vec<_>>(),
        ["ApplicationName"]
    );
    assert_eq!(p.pipeline.stages[0].actions[0].output_artifacts, ["Src"]);
    assert!(p.invalid.is_empty(), "{:#?}", p.invalid);

    // What --param and --map supply resolves.
    let imported = inline(
        UNRESOLVED,
        &[
            "repo:Repo=https://git.example.com/shop.git",
            "import:shared-branch=trunk",
            "buildspec:*=buildspec.yml",
        ],
        &[("VpcId", "vpc-1234"), ("Env", "prod")],
    );
    let p = only(&imported);
    assert_eq!(p.pipeline.name, "shop-prod");
    let get = &p.pipeline.stages[0].actions[0];
    assert_eq!(
        get.configuration["RepositoryUrl"],
        "https://git.example.com/shop.git"
    );
    assert_eq!(get.configuration["BranchName"], "trunk");
    assert!(
        p.pipeline.stages[1].actions[1].configuration["EnvironmentVariables"].contains("vpc-1234")
    );
    assert_eq!(lines(&p.errors).len(), 2, "{:#?}", p.errors); // CodeDeploy and Colour
}

#[test]
fn parameter_problems_are_errors() {
    let imported = inline(
        UNRESOLVED,
        &[],
        &[
            ("Env", "staging"),
            ("Region", "x"),
            ("AWS::Region", "eu-west-1"),
        ],
    );
    assert_eq!(
        lines(&imported.errors),
        [
            "--param Region: the template has no parameter \"Region\" (its parameters are: Env, VpcId; pseudo parameters: AWS::AccountId, AWS::NotificationARNs, AWS::Partition, AWS::Region, AWS::StackId, AWS::StackName, AWS::URLSuffix)",
            "Parameters.Env: --param Env: the value is not one of the parameter's AllowedValues: dev, prod (line 2)",
        ]
    );
    let json = fixture("get-pipeline.json");
    let imported = import(
        &json,
        None,
        &options(SHOP_MAPS, &[("Env", "x")], Approvals::Keep),
        &with_approvals(),
    )
    .unwrap();
    assert_eq!(
        lines(&imported.errors),
        [
            "--param Env: parameters apply to CloudFormation templates only; this is CodePipeline JSON"
        ]
    );
}

#[test]
fn provider_specific_problems() {
    let template = r##"{
  "pipeline": {
    "name": "p",
    "stages": [
      {"name": "Source", "actions": [
        {"name": "Get", "actionTypeId": {"category": "Source", "owner": "AWS", "provider": "S3", "version": "1"},
         "configuration": {"S3Bucket": "b", "S3ObjectKey": "k.zip", "PollForSourceChanges": "true"},
         "outputArtifacts": [{"name": "Src"}], "namespace": "Src"}]},
      {"name": "Build", "actions": [
        {"name": "Make", "actionTypeId": {"category": "Build", "owner": "AWS", "provider": "CodeBuild", "version": "1"},
         "configuration": {"ProjectName": "make", "BatchEnabled": "true", "PrimarySource": "Nope",
           "EnvironmentVariables": "[{\"name\":\"TOKEN\",\"value\":\"/ci/token\",\"type\":\"PARAMETER_STORE\"}]"},
         "inputArtifacts": [{"name": "Src"}]},
        {"name": "Call", "actionTypeId": {"category": "Invoke", "owner": "AWS", "provider": "Lambda", "version": "1"},
         "configuration": {"FunctionName": "notify", "UserParameters": "#{Src.ETag}"},
         "inputArtifacts": [{"name": "Src"}], "outputArtifacts": [{"name": "Out"}]}]}
    ]
  }
}"##;
    let imported = inline(
        template,
        &["s3:b=relative/dir", "lambda:notify=Tools:notify.wasm"],
        &[],
    );
    let p = only(&imported);
    assert_eq!(
        lines(&p.errors),
        [
            "pipeline.stages[0].actions[0].configuration.S3Bucket: --map s3:b/k.zip=relative/dir: the directory must be an absolute path on the agent machine (line 7)",
            "pipeline.stages[1].actions[0].configuration.BatchEnabled: batch builds are not supported: the buildspec provider runs one build; set BatchEnabled to false to import (line 11)",
            "pipeline.stages[1].actions[0].configuration.PrimarySource: names \"Nope\", which is not an input artifact of this action (line 11)",
            "pipeline.stages[1].actions[0].configuration.EnvironmentVariables: variable TOKEN has type PARAMETER_STORE: the buildspec provider takes only PLAINTEXT variables; read the value another way in the buildspec, or make it PLAINTEXT (line 12)",
            "pipeline.stages[1].actions[1].outputArtifacts: the wasm invoke provider produces no output artifacts; remove them or rewrite the action as a buildspec action (line 16)",
        ]
    );
    assert!(lines(&p.warnings).contains(
        &"pipeline.stages[0].actions[0].configuration.PollForSourceChanges: not applied: changes do not start \
          runs: Sluice does not poll sources or take webhooks yet; start runs with `sluice pipeline start` (line 7)"
            .to_owned()
    ));

    // Mapped sources set fewer variables than AWS ones: a reference to a missing one is an error.
    let fixed = template
        .replace("relative/dir", "/srv/in")
        .replace(
            "\"BatchEnabled\": \"true\", \"PrimarySource\": \"Nope\",",
            "",
        )
        .replace("PARAMETER_STORE", "PLAINTEXT")
        .replace(", \"outputArtifacts\": [{\"name\": \"Out\"}]", "");
    let imported = inline(
        &fixed,
        &["s3:b=/srv/in", "lambda:notify=Tools:notify.wasm"],
        &[],
    );
    let p = only(&imported);
    assert_eq!(
        lines(&p.errors),
        [
            "pipeline.stages[1].actions[1].configuration.UserParameters: #{Src.ETag}: the AWS/S3 source became \
          Sluice's directory source, which does not set ETag (it sets Digest); change the reference (line 15)"
        ]
    );
    let call = &p.pipeline.stages[1].actions[1];
    assert_eq!(call.input_artifacts, ["Tools", "Src"]);
    assert_eq!(call.configuration["ComponentPath"], "notify.wasm");
    assert_eq!(
        call.configuration["Parameters"],
        "UserParameters=#{Src.ETag}"
    );
    // An S3 rule may name the bucket alone.
    assert_eq!(
        p.pipeline.stages[0].actions[0].configuration["Path"],
        "/srv/in"
    );
}

#[test]
fn unused_mappings_are_warned_about() {
    let imported = run(
        "get-pipeline.json",
        &[
            "repo:shop=https://git.example.com/shop.git",
            "repo:shpo=https://git.example.com/typo.git",
            "import:nothing=1",
        ],
        &[],
        Approvals::Keep,
    );
    assert_eq!(
        lines(&imported.warnings),
        [
            "--map repo:shpo=https://git.example.com/typo.git: no action of the file used this mapping",
            "--map import:nothing: the file imports no value named \"nothing\"",
        ]
    );
}

#[test]
fn map_rules_are_checked_when_read() {
    let rule: MapRule = "lambda:fn=Tools:a/b.wasm".parse().unwrap();
    assert_eq!(rule.to_string(), "lambda:fn=Tools:a/b.wasm");
    for (text, problem) in [
        (
            "repo=x",
            "invalid mapping \"repo=x\": expected KIND:NAME=VALUE with KIND one of repo, s3, buildspec, lambda, import",
        ),
        (
            "git:x=y",
            "invalid mapping \"git:x=y\": unknown kind \"git\"; expected one of repo, s3, buildspec, lambda, import",
        ),
        (
            "repo:x",
            "invalid mapping \"repo:x\": expected KIND:NAME=VALUE (no '=' found)",
        ),
        (
            "repo:=y",
            "invalid mapping \"repo:=y\": NAME and VALUE must not be empty",
        ),
        (
            "lambda:fn=a.wasm",
            "invalid mapping \"lambda:fn=a.wasm\": a lambda mapping's value is ARTIFACT:PATH, e.g. Tools:notify.wasm",
        ),
    ] {
        assert_eq!(text.parse::<MapRule>().unwrap_err().to_string(), problem);
    }
}

#[test]
fn every_fully_mapped_fixture_validates() {
    type Case<'a> = (&'a str, &'a [&'a str], &'a [(&'a str, &'a str)]);
    let cases: [Case; 4] = [
        ("get-pipeline.json", SHOP_MAPS, &[]),
        (
            "template.yaml",
            &[
                "lambda:*=Source:tools/{name}.wasm",
                "import:shop-domain=shop.example.com",
            ],
            &[("Environment", "production")],
        ),
        ("template.json", INVENTORY_MAPS, &[("Branch", "develop")]),
        (
            "two-pipelines.yaml",
            &["repo:*=/srv/git/{name}.git", "buildspec:*=ci/buildspec.yml"],
            &[("Service", "ledger")],
        ),
    ];
    for (name, maps, params) in cases {
        let imported = run(name, maps, params, Approvals::Keep);
        assert!(imported.is_ok(), "{name}: {imported:#?}");
        for p in &imported.pipelines {
            assert_valid(p, &with_approvals());
        }
    }
}

#[test]
fn every_short_form_resolves_or_says_why_not() {
    let template = r#"
Parameters:
  Names: {Type: CommaDelimitedList, Default: "a,b,c"}
  Flag: {Type: String, Default: "yes"}
Mappings:
  M: {top: {second: [x, y]}}
Conditions:
  IsYes: !Equals [!Ref Flag, "yes"]
  Both: !And [!Condition IsYes, !Not [!Equals [a, b]]]
  Either: !Or [!Equals [1, 2], !Condition Both]
  Loop: !Not [!Condition Loop]
Resources:
  P:
    Type: AWS::CodePipeline::Pipeline
    Properties:
      Name: p
      Stages:
        - Name: Source
          Actions:
            - Name: Get
              ActionTypeId: {Category: Source, Owner: Sluice, Provider: directory, Version: 1}
              Configuration: {Path: /srv/in}
              OutputArtifacts: [{Name: Src}]
        - Name: Build
          Actions:
            - Name: Make
              ActionTypeId: {Category: Build, Owner: Sluice, Provider: commands, Version: 1}
              InputArtifacts: [{Name: Src}]
              Configuration:
                Commands: !Join
                  - "\n"
                  - - !Select [1, !Ref Names]
                    - !Join ["+", !Split [",", "1,2,3"]]
                    - !Base64 hello
                    - !Sub ["${A}-${!Literal}-${AWS::Partition}-${AWS::URLSuffix}", {A: !Select [0, !FindInMap [M, top, second]]}]
                    - !If [Either, "yes", "no"]
                    - !Join ["", [!Ref AWS::NoValue, kept]]
                OutputPaths: !Sub "${AWS::Region}"
                WorkingDirectory: !Select [0, !GetAZs ""]
              RunOrder: !If [Loop, 2, 3]
"#;
    let imported = inline(template, &[], &[]);
    let p = only(&imported);
    let make = &p.pipeline.stages[1].actions[0];
    assert_eq!(
        make.configuration["Commands"],
        "b\n1+2+3\naGVsbG8=\nx-${Literal}-aws-amazonaws.com\nyes\nkept"
    );
    assert_eq!(
        lines(&p.errors),
        [
            "Resources.P.Properties.Stages[1].Actions[0].Configuration.OutputPaths: cannot be resolved offline: ${AWS::Region} in !Sub: !Ref AWS::Region: AWS sets AWS::Region when it deploys the stack; pass --param AWS::Region=VALUE (line 38)",
            "Resources.P.Properties.Stages[1].Actions[0].Configuration.WorkingDirectory: cannot be resolved offline: !GetAZs: the availability zones of a region are known only to AWS (line 39)",
            "Resources.P.Properties.Stages[1].Actions[0].RunOrder: cannot be resolved offline: !If [Loop, …]: the condition cannot be evaluated: condition Loop: it refers to itself (a condition cycle) (line 40)",
        ]
    );
    let imported = inline(
        template,
        &[],
        &[("AWS::Region", "eu-north-1"), ("Flag", "no")],
    );
    let make = &only(&imported).pipeline.stages[1].actions[0];
    assert_eq!(make.configuration["OutputPaths"], "eu-north-1");
    assert!(make.configuration["Commands"].contains("\nno\n"));
}

const CONDITIONS_JSON: &str = r##"{
  "pipeline": {
    "name": "gated",
    "pipelineType": "V2",
    "variables": [{"name": "Env", "defaultValue": "prod"}],
    "stages": [
      {"name": "Source", "actions": [
        {"name": "Get", "actionTypeId": {"category": "Source", "owner": "AWS", "provider": "CodeCommit", "version": "1"},
         "configuration": {"RepositoryName": "shop", "BranchName": "main", "PollForSourceChanges": "false"},
         "outputArtifacts": [{"name": "Src"}], "namespace": "Src"}]},
      {"name": "Build", "actions": [
        {"name": "Make", "actionTypeId": {"category": "Compute", "owner": "AWS", "provider": "Commands", "version": "1"},
         "commands": ["make dist"], "inputArtifacts": [{"name": "Src"}],
         "outputArtifacts": [{"name": "Dist", "files": ["dist/**"]}]}],
       "beforeEntry": {"conditions": [{"result": "SKIP", "rules": [
         {"name": "OnlyMain", "ruleTypeId": {"category": "Rule", "owner": "AWS", "provider": "VariableCheck", "version": "1"},
          "configuration": {"Variable": "#{Src.BranchName}", "Value": "main", "Operator": "EQ"}}]}]},
       "onSuccess": {"conditions": [{"result": "ROLLBACK", "rules": [
         {"name": "Smoke", "ruleTypeId": {"category": "Rule", "owner": "AWS", "provider": "Commands", "version": "1"},
          "commands": ["test -f dist/app", "./dist/app --self-test"], "inputArtifacts": [{"name": "Dist"}],
          "timeoutInMinutes": 5, "roleArn": "arn:aws:iam::123456789012:role/rules", "region": "eu-west-1"},
         {"name": "Hours", "ruleTypeId": {"category": "Rule", "owner": "AWS", "provider": "DeploymentWindow", "version": "1"},
          "configuration": {"Cron": "* * 9-16 ? * 2-6 *", "TimeZone": "Europe/Berlin"}}]}]},
       "onFailure": {"result": "RETRY", "retryConfiguration": {"retryMode": "FAILED_ACTIONS"}}},
      {"name": "Deploy", "actions": [
        {"name": "Ship", "actionTypeId": {"category": "Compute", "owner": "AWS", "provider": "Commands", "version": "1"},
         "commands": ["./ship"], "inputArtifacts": [{"name": "Dist"}]}],
       "onFailure": {"result": "ROLLBACK", "conditions": [{"result": "ROLLBACK", "rules": [
         {"name": "Prod", "ruleTypeId": {"category": "Rule", "owner": "AWS", "provider": "VariableCheck", "version": "1"},
          "configuration": {"Variable": "#{variables.Env}", "Value": "prod", "Operator": "EQ"}}]}]}}
    ]
  }
}"##;

#[test]
fn get_pipeline_json_maps_stage_conditions() {
    let imported = inline(
        CONDITIONS_JSON,
        &["repo:shop=https://git.example.com/shop.git"],
        &[],
    );
    let p = only(&imported);
    assert_valid(p, &with_approvals());
    assert_eq!(
        lines(&p.warnings),
        [
            "pipeline.stages[1].onSuccess.conditions[0].rules[0].roleArn: AWS-only, dropped: Sluice checks rules itself, and agents run Commands rules with their own credentials (line 21)",
            "pipeline.stages[1].onSuccess.conditions[0].rules[0].region: AWS-only, dropped: Sluice checks rules itself, and runs Commands rules on an agent (choose agents with `agent` labels) (line 21)",
            "pipeline.stages[1].onSuccess.conditions[0].rules[1].configuration.Cron: day-of-week \"2-6\" became \"1-5\": CodePipeline numbers the days 1-7 from Sunday, Sluice 0-6 (line 23)",
        ]
    );
    let build = &p.pipeline.stages[1];
    let before = &build.before_entry.as_ref().unwrap().conditions;
    assert_eq!(before[0].result, ConditionResult::Skip);
    assert_eq!(before[0].rules[0].rule_type_id.provider, "VariableCheck");
    assert_eq!(
        before[0].rules[0].configuration["Variable"],
        "#{Src.BranchName}"
    );
    let success = &build.on_success.as_ref().unwrap().conditions[0];
    assert_eq!(success.result, ConditionResult::Rollback);
    let smoke = &success.rules[0];
    assert_eq!(smoke.rule_type_id.provider, "Commands");
    assert_eq!(
        smoke.commands,
        ["test -f dist/app", "./dist/app --self-test"]
    );
    assert_eq!(smoke.input_artifacts, ["Dist"]);
    assert_eq!(smoke.timeout_in_minutes, Some(5));
    assert_eq!(success.rules[1].configuration["Cron"], "* * 9-16 ? * 1-5");
    assert_eq!(success.rules[1].configuration["TimeZone"], "Europe/Berlin");
    let retry = build.on_failure.as_ref().unwrap();
    assert_eq!(retry.result, ConditionResult::Retry);
    assert_eq!(
        retry.retry_configuration.unwrap().retry_mode,
        RetryMode::FailedActions
    );
    let rollback = p.pipeline.stages[2].on_failure.as_ref().unwrap();
    assert_eq!(rollback.result, ConditionResult::Rollback);
    assert_eq!(rollback.conditions[0].rules[0].name, "Prod");
    assert!(
        p.yaml.contains(
            "    onSuccess:
      conditions:
        - result: ROLLBACK
          rules:
            - name: Smoke
              ruleTypeId: {category: Rule, owner: AWS, provider: Commands, version: \"1\"}
              commands:
                - test -f dist/app
                - ./dist/app --self-test
              inputArtifacts: [Dist]
              timeoutInMinutes: 5
"
        ),
        "{}",
        p.yaml
    );
    assert!(
        p.yaml.contains(
            "    onFailure:
      result: RETRY
      retryConfiguration: {retryMode: FAILED_ACTIONS}
"
        ),
        "{}",
        p.yaml
    );
}

#[test]
fn cloudformation_yaml_maps_pascal_case_stage_conditions() {
    let template = r##"
Parameters:
  Branch: {Type: String, Default: main}
Resources:
  Pipeline:
    Type: AWS::CodePipeline::Pipeline
    Properties:
      Name: cfn-gated
      PipelineType: V2
      Stages:
        - Name: Source
          Actions:
            - Name: Get
              ActionTypeId: {Category: Source, Owner: AWS, Provider: CodeCommit, Version: "1"}
              Configuration: {RepositoryName: shop, BranchName: !Ref Branch, PollForSourceChanges: false}
              OutputArtifacts: [{Name: Src}]
              Namespace: Src
        - Name: Deploy
          BeforeEntry:
            Conditions:
              - Result: FAIL
                Rules:
                  - Name: Window
                    RuleTypeId: {Category: Rule, Owner: AWS, Provider: DeploymentWindow, Version: "1"}
                    Configuration: {Cron: "* 0-30 9 ? * MON-FRI", TimeZone: UTC}
                  - Name: Branch
                    RuleTypeId: {Category: Rule, Owner: AWS, Provider: VariableCheck, Version: "1"}
                    Configuration: {Variable: "#{Src.BranchName}", Value: !Ref Branch, Operator: EQ}
          Actions:
            - Name: Ship
              ActionTypeId: {Category: Compute, Owner: AWS, Provider: Commands, Version: "1"}
              Commands: [./ship]
              InputArtifacts: [{Name: Src}]
          OnSuccess:
            Conditions:
              - Result: ROLLBACK
                Rules:
                  - Name: Health
                    RuleTypeId: {Category: Rule, Owner: AWS, Provider: Commands, Version: "1"}
                    Commands: [curl -fsS https://shop.example.com/health]
                    InputArtifacts: [{Name: Src}]
                    RoleArn: !Sub "arn:aws:iam::${AWS::AccountId}:role/rules"
          OnFailure:
            Result: RETRY
            RetryConfiguration: {RetryMode: ALL_ACTIONS}
"##;
    let imported = inline(
        template,
        &["repo:shop=https://git.example.com/shop.git"],
        &[("Branch", "release")],
    );
    assert_eq!(imported.source, SourceKind::CloudFormation);
    let p = only(&imported);
    assert_valid(p, &with_approvals());
    assert_eq!(
        lines(&p.warnings),
        [
            "Resources.Pipeline.Properties.Stages[1].OnSuccess.Conditions[0].Rules[0].RoleArn: AWS-only, dropped: Sluice checks rules itself, and agents run Commands rules with their own credentials (its value was not resolved: ${AWS::AccountId} in !Sub: !Ref AWS::AccountId: AWS sets AWS::AccountId when it deploys the stack; pass --param AWS::AccountId=VALUE) (line 42)"
        ]
    );
    let deploy = &p.pipeline.stages[1];
    let rules = &deploy.before_entry.as_ref().unwrap().conditions[0].rules;
    assert_eq!(rules[0].configuration["Cron"], "* 0-30 9 ? * MON-FRI");
    assert_eq!(rules[1].configuration["Value"], "release");
    let health = &deploy.on_success.as_ref().unwrap().conditions[0].rules[0];
    assert_eq!(
        health.commands,
        ["curl -fsS https://shop.example.com/health"]
    );
    assert_eq!(health.input_artifacts, ["Src"]);
    let retry = deploy.on_failure.as_ref().unwrap();
    assert_eq!(retry.result, ConditionResult::Retry);
    assert_eq!(
        retry.retry_configuration.unwrap().retry_mode,
        RetryMode::AllActions
    );
}

#[test]
fn unsupported_rule_providers_are_errors_with_their_paths() {
    let text = CONDITIONS_JSON
        .replace(
            r#""provider": "Commands", "version": "1"},
          "commands""#,
            r#""provider": "CloudWatchAlarm", "version": "1"},
          "configuration": {"AlarmName": "shop-5xx"},
          "commands""#,
        )
        .replace(
            r##""provider": "VariableCheck", "version": "1"},
          "configuration": {"Variable": "#{variables.Env}""##,
            r##""provider": "LambdaInvoke", "version": "1"},
          "configuration": {"Variable": "#{variables.Env}""##,
        );
    let imported = inline(&text, &["repo:shop=https://git.example.com/shop.git"], &[]);
    let p = only(&imported);
    assert!(!p.is_ok());
    assert_eq!(
        lines(&p.errors),
        [
            "pipeline.stages[1].onSuccess.conditions[0].rules[0].ruleTypeId.provider: rule provider \"CloudWatchAlarm\" \
             has no Sluice equivalent: Sluice supports VariableCheck, DeploymentWindow, Commands rules; rewrite it as a \
             Commands rule that checks the alarm with your own tooling (e.g. `aws cloudwatch describe-alarms` on an \
             agent with AWS credentials); the rule is kept as written (line 19)",
            "pipeline.stages[2].onFailure.conditions[0].rules[0].ruleTypeId.provider: rule provider \"LambdaInvoke\" \
             has no Sluice equivalent: Sluice supports VariableCheck, DeploymentWindow, Commands rules; rewrite it as a \
             Commands rule that runs the check the function makes; the rule is kept as written (line 30)",
        ]
    );
    // Kept as written, and validation does not report them a second time.
    assert!(p.yaml.contains("provider: CloudWatchAlarm"), "{}", p.yaml);
    assert!(p.yaml.contains("AlarmName: shop-5xx"), "{}", p.yaml);
    assert!(p.invalid.is_empty(), "{:#?}", p.invalid);
}
