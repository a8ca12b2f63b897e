//! Importing AWS CodePipeline definitions: `aws codepipeline get-pipeline` JSON (with or
//! without its `{"pipeline": …, "metadata": …}` wrapper) and CloudFormation templates
//! (YAML with the short-form tags, or JSON) holding `AWS::CodePipeline::Pipeline`
//! resources.
//!
//! [`import`] resolves what a template allows offline (parameters, `--param` values,
//! conditions, mappings, `AWS::NoValue` and the intrinsic functions), maps AWS providers
//! to Sluice's built-in ones following [`ImportOptions`], and reports everything it
//! cannot carry over with its path and line: as a warning when dropping it changes
//! nothing a run does (`RoleArn`, `ArtifactStore`, tags), as an error when it would. Each
//! pipeline comes back as a [`Pipeline`], its YAML form (which [`crate::parse`] reads back)
//! and the diagnostics of validating that form against the catalog.
//!
//! ```
//! use sluice_pipeline::{Catalog, import::{ImportOptions, MapRule, import}};
//! let text = r#"{"pipeline": {"name": "web", "stages": [
//!   {"name": "Source", "actions": [{"name": "Get",
//!     "actionTypeId": {"category": "Source", "owner": "AWS", "provider": "CodeCommit", "version": "1"},
//!     "configuration": {"RepositoryName": "web", "BranchName": "main"},
//!     "outputArtifacts": [{"name": "Src"}]}]},
//!   {"name": "Build", "actions": [{"name": "Make",
//!     "actionTypeId": {"category": "Build", "owner": "AWS", "provider": "CodeBuild", "version": "1"},
//!     "configuration": {"ProjectName": "web-build"},
//!     "inputArtifacts": [{"name": "Src"}]}]}]}}"#;
//! let mut options = ImportOptions::default();
//! options.maps.push("repo:web=https://git.example.com/web.git".parse().unwrap());
//! let imported = import(text, None, &options, &Catalog::builtin()).unwrap();
//! assert!(imported.is_ok());
//! assert!(imported.pipelines[0].yaml.contains("provider: buildspec"));
//! ```

mod cfn;
mod convert;
mod emit;
mod load;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use crate::diag::{Diagnostics, Path};
use crate::{Catalog, Diagnostic, Format, Pipeline};

pub use emit::to_yaml;

use cfn::Template;
use load::{Raw, RawVal};

/// What to do with CodePipeline's manual approvals (`Approval/AWS/Manual`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Approvals {
    /// Keep each as an `Approval/Sluice/manual` action. When the catalog has no such
    /// provider (Sluice's built-in one has none yet), this is an error naming the action.
    #[default]
    Keep,
    /// Leave approvals out, each with a warning; a stage left empty is left out too.
    Drop,
}

/// How the import maps what AWS configuration cannot say by itself.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// CloudFormation parameter values (`--param NAME=VALUE`), including the pseudo
    /// parameters (`AWS::Region`, `AWS::AccountId`, `AWS::StackName`, ...).
    pub params: BTreeMap<String, String>,
    /// `--map KIND:NAME=VALUE` rules; see [`MapRule`].
    pub maps: Vec<MapRule>,
    /// Manual approvals.
    pub approvals: Approvals,
}

/// What a [`MapRule`] maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum MapKind {
    /// `repo:NAME=URL`: the git URL of a CodeCommit repository (its `RepositoryName`), a
    /// connection's repository (`FullRepositoryId`, `owner/name`) or a GitHub repository
    /// (`Owner/Repo`).
    Repo,
    /// `s3:BUCKET/KEY=DIR`: the directory (absolute, on the agent machine) an S3 source
    /// becomes.
    S3,
    /// `buildspec:PROJECT=PATH`: the buildspec file of a CodeBuild project, relative to
    /// the action's primary input.
    Buildspec,
    /// `lambda:FUNCTION=ARTIFACT:PATH`: the WASM component that replaces a Lambda
    /// function: the input artifact that carries it and its path in that artifact.
    Lambda,
    /// `import:EXPORT=VALUE`: the value of another stack's export (`Fn::ImportValue`).
    Import,
}

impl MapKind {
    const ALL: [MapKind; 5] = [
        MapKind::Repo,
        MapKind::S3,
        MapKind::Buildspec,
        MapKind::Lambda,
        MapKind::Import,
    ];

    /// The word before the colon.
    pub fn as_str(self) -> &'static str {
        match self {
            MapKind::Repo => "repo",
            MapKind::S3 => "s3",
            MapKind::Buildspec => "buildspec",
            MapKind::Lambda => "lambda",
            MapKind::Import => "import",
        }
    }
}

/// One `--map KIND:NAME=VALUE` rule. `NAME` may be a logical id when the template's
/// value is a `!Ref`/`!GetAtt` of a resource whose name AWS assigns. A `NAME` of `*`
/// applies to every name without a rule of its own, with `{name}` in `VALUE` replaced
/// by the name (`repo:*=https://git.example.com/{name}.git`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapRule {
    /// What is mapped.
    pub kind: MapKind,
    /// The AWS-side name, or `*`.
    pub name: String,
    /// The Sluice-side value.
    pub value: String,
}

/// A `--map` rule that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid mapping {text:?}: {problem}")]
pub struct MapRuleError {
    /// The rule as given.
    pub text: String,
    /// What is wrong and what to write instead.
    pub problem: String,
}

impl FromStr for MapRule {
    type Err = MapRuleError;

    fn from_str(text: &str) -> Result<MapRule, MapRuleError> {
        let bad = |problem: String| MapRuleError {
            text: text.to_owned(),
            problem,
        };
        let kinds: Vec<&str> = MapKind::ALL.iter().map(|k| k.as_str()).collect();
        let (kind, rest) = text.split_once(':').ok_or_else(|| {
            bad(format!(
                "expected KIND:NAME=VALUE with KIND one of {}",
                kinds.join(", ")
            ))
        })?;
        let kind = MapKind::ALL
            .into_iter()
            .find(|k| k.as_str() == kind)
            .ok_or_else(|| {
                bad(format!(
                    "unknown kind {kind:?}; expected one of {}",
                    kinds.join(", ")
                ))
            })?;
        let (name, value) = rest
            .split_once('=')
            .ok_or_else(|| bad("expected KIND:NAME=VALUE (no '=' found)".to_owned()))?;
        if name.is_empty() || value.is_empty() {
            return Err(bad("NAME and VALUE must not be empty".to_owned()));
        }
        if kind == MapKind::Lambda && !value.contains(':') {
            return Err(bad(
                "a lambda mapping's value is ARTIFACT:PATH, e.g. Tools:notify.wasm".to_owned(),
            ));
        }
        Ok(MapRule {
            kind,
            name: name.to_owned(),
            value: value.to_owned(),
        })
    }
}

impl fmt::Display for MapRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}={}", self.kind.as_str(), self.name, self.value)
    }
}

/// The `--map` rules, remembering which were used.
pub(crate) struct Rules<'a> {
    rules: &'a [MapRule],
    used: RefCell<BTreeSet<usize>>,
}

impl<'a> Rules<'a> {
    fn new(rules: &'a [MapRule]) -> Rules<'a> {
        Rules {
            rules,
            used: RefCell::new(BTreeSet::new()),
        }
    }

    /// The value of the rule of the first of `names` that has a rule of its own (the
    /// last such rule given wins).
    pub fn exact(&self, kind: MapKind, names: &[String]) -> Option<String> {
        for name in names {
            let found = self
                .rules
                .iter()
                .enumerate()
                .rev()
                .find(|(_, r)| r.kind == kind && &r.name == name);
            if let Some((i, rule)) = found {
                self.used.borrow_mut().insert(i);
                return Some(rule.value.clone());
            }
        }
        None
    }

    /// The value of the `*` rule, with `{name}` replaced by `name`.
    pub fn wildcard(&self, kind: MapKind, name: &str) -> Option<String> {
        let (i, rule) = self
            .rules
            .iter()
            .enumerate()
            .rev()
            .find(|(_, r)| r.kind == kind && r.name == "*")?;
        self.used.borrow_mut().insert(i);
        Some(rule.value.replace("{name}", name))
    }

    /// [`Rules::exact`], else [`Rules::wildcard`] for the first name.
    pub fn lookup(&self, kind: MapKind, names: &[String]) -> Option<String> {
        self.exact(kind, names)
            .or_else(|| self.wildcard(kind, names.first()?))
    }

    fn unused(&self) -> Vec<&MapRule> {
        let used = self.used.borrow();
        self.rules
            .iter()
            .enumerate()
            .filter(|(i, r)| !used.contains(i) && r.kind != MapKind::Import)
            .map(|(_, r)| r)
            .collect()
    }
}

/// Where a value is: its path and, for YAML and JSON text, its line.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Loc {
    pub path: Path,
    pub line: Option<usize>,
}

impl Loc {
    pub fn root() -> Loc {
        Loc::default()
    }

    /// A field or map key of this node; `line` 0 or `None` keeps this node's line.
    pub fn key(&self, key: &str, line: Option<usize>) -> Loc {
        Loc {
            path: self.path.key(key),
            line: line.filter(|l| *l > 0).or(self.line),
        }
    }

    /// A list item of this node.
    pub fn index(&self, index: usize, line: Option<usize>) -> Loc {
        Loc {
            path: self.path.index(index),
            line: line.filter(|l| *l > 0).or(self.line),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Severity {
    Error,
    Warning,
}

/// Errors and warnings against locations, sorted into [`Diagnostic`]s at the end.
#[derive(Debug, Default)]
pub(crate) struct Notes {
    items: Vec<(Severity, Loc, String)>,
}

impl Notes {
    pub fn error(&mut self, loc: &Loc, message: impl Into<String>) {
        self.items
            .push((Severity::Error, loc.clone(), message.into()));
    }

    pub fn warn(&mut self, loc: &Loc, message: impl Into<String>) {
        self.items
            .push((Severity::Warning, loc.clone(), message.into()));
    }

    pub fn error_count(&self) -> usize {
        self.items
            .iter()
            .filter(|(s, _, _)| *s == Severity::Error)
            .count()
    }

    /// (errors, warnings), each by line, then by path; messages end with `(line N)`.
    fn finish(mut self) -> (Vec<Diagnostic>, Vec<Diagnostic>) {
        self.items
            .sort_by(|a, b| (a.1.line, &a.1.path).cmp(&(b.1.line, &b.1.path)));
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        for (severity, loc, message) in self.items {
            let diagnostic = Diagnostic {
                path: loc.path.to_string(),
                message: match loc.line {
                    Some(line) => format!("{message} (line {line})"),
                    None => message,
                },
            };
            match severity {
                Severity::Error => errors.push(diagnostic),
                Severity::Warning => warnings.push(diagnostic),
            }
        }
        (errors, warnings)
    }
}

/// What kind of file was imported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// CodePipeline's API JSON (`get-pipeline` output, wrapped or bare), or YAML of the
    /// same shape.
    CodePipeline,
    /// A CloudFormation template, or the `Properties` of one pipeline resource.
    CloudFormation,
}

/// The result of [`import`].
#[derive(Debug, Clone, PartialEq)]
pub struct Import {
    /// What the file was.
    pub source: SourceKind,
    /// The pipelines, in document order.
    pub pipelines: Vec<ImportedPipeline>,
    /// Problems not tied to one pipeline (parameters, `--param` values).
    pub errors: Vec<Diagnostic>,
    /// Warnings not tied to one pipeline (an unused `--map` rule, a template transform).
    pub warnings: Vec<Diagnostic>,
}

impl Import {
    /// Whether every pipeline converted without errors and validates.
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty() && self.pipelines.iter().all(ImportedPipeline::is_ok)
    }
}

/// One converted pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportedPipeline {
    /// Where it came from: `pipeline` (wrapped JSON), `Resources.<LogicalId>` (a
    /// template), or empty (a bare declaration).
    pub origin: String,
    /// The converted pipeline. Actions that could not be mapped keep their AWS action
    /// type (and are named in `errors`).
    pub pipeline: Pipeline,
    /// The pipeline in Sluice's YAML form.
    pub yaml: String,
    /// What could not be carried over and would change what a run does, with paths in
    /// the imported file.
    pub errors: Vec<Diagnostic>,
    /// What was dropped or changed without changing what a run does, with paths in the
    /// imported file.
    pub warnings: Vec<Diagnostic>,
    /// Validation of `yaml` against the catalog: paths and lines in `yaml`. Problems of
    /// actions already named in `errors` are left out.
    pub invalid: Vec<Diagnostic>,
    /// Transitions the template disables (`DisableInboundStageTransitions`). They are not
    /// part of a definition: disable them once the pipeline exists.
    pub disabled_transitions: Vec<DisabledTransition>,
}

/// A stage whose inbound transition is disabled, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisabledTransition {
    /// The stage the transition leads into.
    pub stage: String,
    /// The reason, as the template gives it.
    pub reason: String,
}

impl ImportedPipeline {
    /// Whether it converted without errors and validates.
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty() && self.invalid.is_empty()
    }
}

/// A file that cannot be imported at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    /// Not valid YAML or JSON; the message has the line and column.
    #[error("{0}")]
    Syntax(Diagnostics),
    /// Valid, but neither a CodePipeline definition nor a template with a pipeline.
    #[error("{0}")]
    NotAPipeline(String),
}

/// Imports every pipeline of a CodePipeline definition or CloudFormation template.
///
/// `format` of `None` means [`Format::detect`]. Conversion problems do not make this
/// fail: they are in the result ([`Import::is_ok`]), next to the converted pipelines.
pub fn import(
    text: &str,
    format: Option<Format>,
    options: &ImportOptions,
    catalog: &Catalog,
) -> Result<Import, ImportError> {
    let format = format.unwrap_or_else(|| Format::detect(text));
    let root = load::load(text, format).map_err(ImportError::Syntax)?;
    let Some(entries) = root.entries() else {
        return Err(ImportError::NotAPipeline(format!(
            "the document is {}; expected a CodePipeline definition (`pipeline` or `stages` at the top) \
             or a CloudFormation template (`Resources` at the top)",
            describe(&root)
        )));
    };
    let has = |key: &str| entries.iter().any(|e| e.key == key);
    let rules = Rules::new(&options.maps);
    let imports: BTreeMap<String, String> = options
        .maps
        .iter()
        .filter(|r| r.kind == MapKind::Import)
        .map(|r| (r.name.clone(), r.value.clone()))
        .collect();
    let mut notes = Notes::default();
    let (source, drafts, used_imports) = if has("Resources") || has("AWSTemplateFormatVersion") {
        let mut template = Template::cloudformation(&root, &options.params, &imports, &mut notes);
        let drafts = template_pipelines(&mut template, &root, &mut notes)?;
        (SourceKind::CloudFormation, drafts, template.used_imports)
    } else if has("pipeline") || has("stages") || has("Stages") {
        let cfn = has("Stages");
        let mut template = if cfn {
            Template::cloudformation(&root, &options.params, &imports, &mut notes)
        } else {
            Template::plain(&root, &imports)
        };
        if !cfn {
            for key in options.params.keys() {
                notes.error(
                    &Loc::root(),
                    format!("--param {key}: parameters apply to CloudFormation templates only; this is CodePipeline JSON"),
                );
            }
        }
        let drafts = declaration(&mut template, &root, cfn, &mut notes);
        let source = if cfn {
            SourceKind::CloudFormation
        } else {
            SourceKind::CodePipeline
        };
        (source, drafts, template.used_imports)
    } else {
        let keys: Vec<&str> = entries.iter().map(|e| e.key.as_str()).collect();
        return Err(ImportError::NotAPipeline(format!(
            "not a CodePipeline definition or CloudFormation template: expected `pipeline`, `stages` \
             or `Resources` at the top, found {}",
            keys.join(", ")
        )));
    };

    let mut pipelines = Vec::new();
    for draft in drafts {
        let mut converter = convert::Converter::new(
            draft.cfn,
            &rules,
            catalog,
            options.approvals,
            &draft.projects,
        );
        let pipeline = converter.pipeline(&draft.node, draft.default_name.as_deref());
        let failed = converter.failed_paths();
        let (errors, warnings, transitions) = converter.finish();
        let mut imported =
            finish_pipeline(draft.origin, pipeline, &failed, errors, warnings, catalog);
        imported.disabled_transitions = transitions;
        pipelines.push(imported);
    }

    let mut seen = BTreeMap::new();
    for p in &pipelines {
        if let Some(first) = seen.insert(p.pipeline.name.clone(), p.origin.clone()) {
            notes.error(
                &Loc::root(),
                format!(
                    "two pipelines are named {:?} ({first} and {}); pipeline names must be unique",
                    p.pipeline.name, p.origin
                ),
            );
        }
    }
    for rule in rules.unused() {
        notes.warn(
            &Loc::root(),
            format!("--map {rule}: no action of the file used this mapping"),
        );
    }
    for name in imports.keys().filter(|n| !used_imports.contains(*n)) {
        notes.warn(
            &Loc::root(),
            format!("--map import:{name}: the file imports no value named {name:?}"),
        );
    }
    let (errors, warnings) = notes.finish();
    Ok(Import {
        source,
        pipelines,
        errors,
        warnings,
    })
}

/// One pipeline declaration, resolved, waiting to be converted.
struct Draft {
    origin: String,
    node: cfn::Node,
    cfn: bool,
    default_name: Option<String>,
    projects: Vec<convert::Project>,
}

/// A CodePipeline declaration: wrapped, bare, or a resource's `Properties`.
fn declaration(
    template: &mut Template<'_>,
    root: &Raw,
    cfn: bool,
    notes: &mut Notes,
) -> Vec<Draft> {
    let root_loc = Loc::root();
    let (origin, raw, loc) = match root.get("pipeline") {
        Some(entry) => {
            for other in root.entries().unwrap_or(&[]) {
                let loc = root_loc.key(&other.key, Some(other.line));
                match other.key.as_str() {
                    "pipeline" | "metadata" => {}
                    "tags" => notes.warn(&loc, "dropped: Sluice does not store tags"),
                    _ => notes.error(&loc, "unknown field; expected pipeline, metadata or tags"),
                }
            }
            (
                "pipeline".to_owned(),
                &entry.value,
                root_loc.key("pipeline", Some(entry.line)),
            )
        }
        None => (String::new(), root, root_loc.clone()),
    };
    let Some(node) = template.resolve(raw, loc) else {
        return Vec::new();
    };
    vec![Draft {
        origin,
        node,
        cfn,
        default_name: None,
        projects: Vec::new(),
    }]
}

/// The `AWS::CodePipeline::Pipeline` resources of a template, resolved.
fn template_pipelines(
    template: &mut Template<'_>,
    root: &Raw,
    notes: &mut Notes,
) -> Result<Vec<Draft>, ImportError> {
    let resources_loc = Loc::root().key("Resources", root.get("Resources").map(|r| r.line));
    if let Some(transform) = root.get("Transform") {
        notes.warn(
            &Loc::root().key("Transform", Some(transform.line)),
            "template transforms (macros such as AWS::Serverless) are not applied; the resources are read as written",
        );
    }
    let resources = template.resources();
    let type_of = |e: &load::RawEntry| {
        e.value
            .get("Type")
            .and_then(|t| t.value.as_str())
            .unwrap_or("")
            .to_owned()
    };
    let mut projects = Vec::new();
    for entry in resources
        .iter()
        .filter(|e| type_of(e) == "AWS::CodeBuild::Project")
    {
        let loc = resources_loc.key(&entry.key, Some(entry.line));
        let properties = entry
            .value
            .get("Properties")
            .and_then(|p| template.resolve(&p.value, loc.key("Properties", Some(p.line))));
        projects.push(convert::Project::new(&entry.key, properties));
    }
    let mut drafts = Vec::new();
    let mut found_any = false;
    for entry in &resources {
        let kind = type_of(entry);
        let loc = resources_loc.key(&entry.key, Some(entry.line));
        if kind == "AWS::CodePipeline::Webhook" {
            notes.warn(
                &loc,
                "webhooks are not imported: changes do not start runs yet; start runs with `sluice pipeline start`",
            );
            continue;
        }
        if kind != "AWS::CodePipeline::Pipeline" {
            continue;
        }
        found_any = true;
        if let Some(condition) = entry.value.get("Condition") {
            let condition_loc = loc.key("Condition", Some(condition.line));
            let name = condition.value.as_str().unwrap_or_default();
            match template.condition(name) {
                Ok(true) => {}
                Ok(false) => {
                    notes.warn(
                        &condition_loc,
                        format!(
                            "not imported: its condition {name} is false with these parameters"
                        ),
                    );
                    continue;
                }
                Err(why) => {
                    notes.error(
                        &condition_loc,
                        format!(
                            "whether this pipeline exists depends on condition {name}, which cannot be evaluated: {}",
                            why.describe()
                        ),
                    );
                    continue;
                }
            }
        }
        let Some(properties) = entry.value.get("Properties") else {
            notes.error(&loc, "the pipeline resource has no Properties");
            continue;
        };
        let Some(node) = template.resolve(
            &properties.value,
            loc.key("Properties", Some(properties.line)),
        ) else {
            notes.error(&loc, "the pipeline's Properties are AWS::NoValue");
            continue;
        };
        drafts.push(Draft {
            origin: loc.path.to_string(),
            node,
            cfn: true,
            default_name: Some(entry.key.clone()),
            projects: projects.clone(),
        });
    }
    if !found_any {
        let mut types: Vec<String> = resources.iter().map(|e| type_of(e)).collect();
        types.sort();
        types.dedup();
        let found = if types.is_empty() {
            "it has no resources".to_owned()
        } else {
            format!("its resource types: {}", types.join(", "))
        };
        return Err(ImportError::NotAPipeline(format!(
            "the CloudFormation template has no AWS::CodePipeline::Pipeline resource ({found})"
        )));
    }
    Ok(drafts)
}

/// Emits the YAML, checks that it reads back, and validates it.
fn finish_pipeline(
    origin: String,
    pipeline: Pipeline,
    failed: &[String],
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
    catalog: &Catalog,
) -> ImportedPipeline {
    let yaml = to_yaml(&pipeline);
    let mut errors = errors;
    match crate::parse(&yaml, Some(Format::Yaml)) {
        Ok(parsed) if parsed.pipeline == pipeline => {}
        _ => errors.push(Diagnostic {
            path: String::new(),
            message: "internal error: the converted YAML does not read back as the converted \
                      pipeline; please report this with the imported file"
                .to_owned(),
        }),
    }
    let invalid = match crate::parse_and_validate(&yaml, Some(Format::Yaml), catalog) {
        Ok(_) => Vec::new(),
        Err(Diagnostics(found)) => found
            .into_iter()
            .filter(|d| {
                !failed.iter().any(|prefix| {
                    d.path == *prefix
                        || d.path.starts_with(&format!("{prefix}."))
                        || d.path.starts_with(&format!("{prefix}["))
                })
            })
            .collect(),
    };
    ImportedPipeline {
        origin,
        pipeline,
        yaml,
        errors,
        warnings,
        invalid,
        disabled_transitions: Vec::new(),
    }
}

fn describe(raw: &Raw) -> &'static str {
    match raw.val {
        RawVal::Null => "empty",
        RawVal::Bool(_) | RawVal::Num(_) | RawVal::Str(_) => "a single value",
        RawVal::Seq(_) => "a list",
        RawVal::Map(_) => "a mapping",
    }
}
