//! A resolved CodePipeline declaration (API lowerCamel or CloudFormation PascalCase) to a
//! Sluice [`Pipeline`], with AWS providers mapped to the built-in ones.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::cfn::{Node, Unknown, Val};
use super::{Approvals, Loc, MapKind, Notes, Rules};
use crate::conditions;
use crate::diag::Path;
use crate::model::{
    Action, ActionTypeId, Category, Condition, ConditionResult, ExecutionMode, OnFailure, Pipeline,
    RetryConfiguration, RetryMode, Rule, RuleTypeId, Stage, StageConditions, Variable,
};
use crate::{Catalog, Diagnostic};

/// Variables Sluice's git source sets (plugins/source-git/README.md).
const GIT_VARIABLES: &[&str] = &[
    "CommitId",
    "BranchName",
    "AuthorDate",
    "CommitMessage",
    "Tag",
];
/// Variables Sluice's directory source sets.
const DIRECTORY_VARIABLES: &[&str] = &["Digest"];

const AWS_ROLE: &str = "AWS-only, dropped: Sluice agents run actions with their own credentials";
const AWS_RULE_ROLE: &str = "AWS-only, dropped: Sluice checks rules itself, and agents run Commands rules with their own credentials";
const POLLING: &str = "changes do not start runs: Sluice does not poll sources or take \
                       webhooks yet; start runs with `sluice pipeline start`";

/// A CodeBuild project of the same template, for the buildspec and variables it sets.
#[derive(Debug, Clone)]
pub(crate) struct Project {
    id: String,
    name: Option<String>,
    properties: Option<Node>,
}

impl Project {
    pub fn new(id: &str, properties: Option<Node>) -> Project {
        let name = properties
            .as_ref()
            .and_then(|p| p.get("Name"))
            .and_then(Node::text);
        Project {
            id: id.to_owned(),
            name,
            properties,
        }
    }

    fn buildspec(&self) -> Option<&Node> {
        self.properties.as_ref()?.get("Source")?.get("BuildSpec")
    }

    fn variables(&self) -> Option<&Node> {
        self.properties
            .as_ref()?
            .get("Environment")?
            .get("EnvironmentVariables")
    }
}

/// A mapping's fields, looked up by their lowerCamel name in either style.
struct Obj<'n> {
    cfn: bool,
    loc: &'n Loc,
    entries: &'n [(String, Node)],
}

impl<'n> Obj<'n> {
    fn key(&self, camel: &str) -> String {
        styled(self.cfn, camel)
    }

    fn get(&self, camel: &str) -> Option<&'n Node> {
        let key = self.key(camel);
        self.entries
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, node)| node)
            .filter(|node| node.val != Val::Null)
    }

    fn missing(&self, camel: &str) -> Loc {
        self.loc.key(&self.key(camel), None)
    }
}

/// `actionTypeId` in API JSON, `ActionTypeId` in CloudFormation.
fn styled(cfn: bool, camel: &str) -> String {
    if !cfn {
        return camel.to_owned();
    }
    let mut chars = camel.chars();
    match chars.next() {
        Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}

/// What the conversion knows about one action of the output.
struct Info {
    stage: usize,
    action: usize,
    loc: Loc,
    failed: bool,
    /// `AWS/CodeCommit` etc.: where the action came from.
    from: String,
    /// The output variables of the Sluice source it became, if it became one.
    sets: Option<&'static [&'static str]>,
    /// Became a buildspec action from CodeBuild (gets `SourceVersion`).
    codebuild: bool,
    /// The AWS configuration: key, location and text.
    config: Vec<(String, Loc, Option<String>)>,
}

/// What mapping one action came to.
enum Outcome {
    /// Mapped (or already a Sluice action).
    Mapped,
    /// Not mapped: the action keeps its AWS type and configuration.
    Failed,
    /// Mapped to a type that does not validate here (approvals); reported already.
    FailedKept,
    /// Left out (`--approvals drop`).
    Dropped,
}

/// An action of the input, converted.
enum Converted {
    Kept(Box<Action>),
    /// Left out on purpose (`--approvals drop`).
    Dropped,
    /// Too broken to convert; reported.
    Broken,
}

/// The action being converted: its AWS configuration, taken key by key.
struct Draft<'n> {
    loc: Loc,
    type_loc: Loc,
    aws: ActionTypeId,
    config: Vec<(String, &'n Node)>,
    taken: BTreeSet<String>,
    outputs_loc: Loc,
    /// `outputArtifacts[].files` (Commands actions).
    files: Vec<(Loc, Vec<String>)>,
    commands: Option<&'n Node>,
    environment: Option<&'n Node>,
    output_variables: Option<&'n Node>,
}

impl<'n> Draft<'n> {
    fn take(&mut self, key: &str) -> Option<&'n Node> {
        self.taken.insert(key.to_owned());
        self.config
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, n)| *n)
            .filter(|n| n.val != Val::Null)
    }

    fn label(&self) -> String {
        format!("{}/{}", self.aws.owner, self.aws.provider)
    }
}

pub(crate) struct Converter<'a> {
    cfn: bool,
    rules: &'a Rules<'a>,
    catalog: &'a Catalog,
    approvals: Approvals,
    projects: &'a [Project],
    notes: Notes,
    infos: Vec<Info>,
    /// Output paths of rules that were not mapped (kept as written).
    failed_rules: Vec<String>,
    transitions: Vec<super::DisabledTransition>,
}

impl<'a> Converter<'a> {
    pub fn new(
        cfn: bool,
        rules: &'a Rules<'a>,
        catalog: &'a Catalog,
        approvals: Approvals,
        projects: &'a [Project],
    ) -> Converter<'a> {
        Converter {
            cfn,
            rules,
            catalog,
            approvals,
            projects,
            notes: Notes::default(),
            infos: Vec::new(),
            failed_rules: Vec::new(),
            transitions: Vec::new(),
        }
    }

    /// Output paths (`stages[1].actions[0]`, `stages[2].onSuccess.conditions[0].rules[0]`)
    /// of the actions and rules that were not mapped.
    pub fn failed_paths(&self) -> Vec<String> {
        let stages = Path::default().key("stages");
        self.infos
            .iter()
            .filter(|i| i.failed)
            .map(|i| {
                stages
                    .index(i.stage)
                    .key("actions")
                    .index(i.action)
                    .to_string()
            })
            .chain(self.failed_rules.iter().cloned())
            .collect()
    }

    /// (errors, warnings, transitions to disable).
    pub fn finish(
        self,
    ) -> (
        Vec<Diagnostic>,
        Vec<Diagnostic>,
        Vec<super::DisabledTransition>,
    ) {
        let (errors, warnings) = self.notes.finish();
        (errors, warnings, self.transitions)
    }

    // Reading values. Each reader reports its own problem and returns `None` after one.

    fn object<'n>(&mut self, node: &'n Node, known: &[&str]) -> Option<Obj<'n>> {
        let entries = match &node.val {
            Val::Map(entries) => entries,
            _ => return self.expected(node, "a mapping"),
        };
        let obj = Obj {
            cfn: self.cfn,
            loc: &node.loc,
            entries,
        };
        let accepted: Vec<String> = known.iter().map(|k| obj.key(k)).collect();
        for (key, value) in entries {
            if !accepted.contains(key) {
                let mut message =
                    format!("unknown field; expected one of: {}", accepted.join(", "));
                if let Some(guess) = accepted.iter().find(|a| a.eq_ignore_ascii_case(key)) {
                    message.push_str(&format!("; did you mean {guess}?"));
                }
                self.notes.error(&value.loc, message);
            }
        }
        Some(obj)
    }

    fn expected<T>(&mut self, node: &Node, what: &str) -> Option<T> {
        let found = match &node.val {
            Val::Unknown(why) => {
                self.unresolved(&node.loc, why);
                return None;
            }
            Val::Null => "nothing (null)",
            Val::Bool(_) => "a boolean",
            Val::Num(_) => "a number",
            Val::Str(_) => "a string",
            Val::List(_) => "a list",
            Val::Map(_) => "a mapping",
        };
        self.notes
            .error(&node.loc, format!("expected {what}, found {found}"));
        None
    }

    fn unresolved(&mut self, loc: &Loc, why: &Unknown) {
        self.notes.error(
            loc,
            format!("cannot be resolved offline: {}", why.describe()),
        );
    }

    /// A string (numbers and booleans as written).
    fn text(&mut self, node: &Node) -> Option<String> {
        match node.text() {
            Some(text) => Some(text),
            None => self.expected(node, "a string"),
        }
    }

    fn required_text(&mut self, obj: &Obj<'_>, camel: &str) -> Option<String> {
        match obj.get(camel) {
            Some(node) => self.text(node),
            None => {
                self.notes
                    .error(&obj.missing(camel), "missing required field");
                None
            }
        }
    }

    fn number(&mut self, node: &Node) -> Option<u32> {
        match node.text().map(|t| t.trim().parse::<u32>()) {
            Some(Ok(n)) => Some(n),
            _ => self.expected(node, "a whole number"),
        }
    }

    fn list<'n>(&mut self, node: &'n Node) -> Option<&'n [Node]> {
        match &node.val {
            Val::List(items) => Some(items),
            _ => self.expected(node, "a list"),
        }
    }

    /// The names a value may be mapped by: its text, or the logical id of the resource
    /// it names when only AWS knows the resource's name.
    fn names(&mut self, node: &Node) -> Option<Vec<String>> {
        match &node.val {
            Val::Unknown(Unknown {
                resource: Some(id), ..
            }) => Some(vec![id.clone()]),
            _ => self.text(node).map(|t| vec![t]),
        }
    }

    /// Warns that a field is dropped; mentions a value that was not resolved.
    fn dropped(&mut self, node: &Node, message: &str) {
        let note = match first_unknown(node) {
            Some(why) => format!(" (its value was not resolved: {})", why.describe()),
            None => String::new(),
        };
        self.notes.warn(&node.loc, format!("{message}{note}"));
    }

    // The declaration.

    pub fn pipeline(&mut self, node: &Node, default_name: Option<&str>) -> Pipeline {
        let mut pipeline = Pipeline {
            name: default_name.unwrap_or_default().to_owned(),
            execution_mode: ExecutionMode::default(),
            pipeline_type: None,
            variables: Vec::new(),
            stages: Vec::new(),
            schedules: Vec::new(),
            watch: Vec::new(),
            polling: None,
            triggers: Vec::new(),
        };
        let mut known = vec![
            "name",
            "roleArn",
            "artifactStore",
            "artifactStores",
            "stages",
            "version",
            "executionMode",
            "pipelineType",
            "variables",
            "triggers",
        ];
        if self.cfn {
            known.extend([
                "restartExecutionOnUpdate",
                "disableInboundStageTransitions",
                "tags",
            ]);
        }
        let Some(obj) = self.object(node, &known) else {
            return pipeline;
        };
        match (obj.get("name"), default_name) {
            (Some(name), _) => pipeline.name = self.text(name).unwrap_or_default(),
            (None, Some(id)) => self.notes.warn(
                obj.loc,
                format!(
                    "no Name: CloudFormation would generate one; the pipeline is named after its logical id {id:?}"
                ),
            ),
            (None, None) => self.notes.error(&obj.missing("name"), "missing required field"),
        }
        if let Some(role) = obj.get("roleArn") {
            self.dropped(role, AWS_ROLE);
        }
        for key in ["artifactStore", "artifactStores"] {
            if let Some(store) = obj.get(key) {
                self.artifact_store(store);
            }
        }
        if let Some(mode) = obj.get("executionMode")
            && let Some(text) = self.text(mode)
        {
            match ExecutionMode::ALL.into_iter().find(|m| m.as_str() == text) {
                Some(m) => pipeline.execution_mode = m,
                None => self.notes.error(
                    &mode.loc,
                    format!(
                        "unknown value {text:?}; expected one of: SUPERSEDED, QUEUED, PARALLEL"
                    ),
                ),
            }
        }
        if let Some(kind) = obj.get("pipelineType")
            && let Some(text) = self.text(kind)
        {
            if text == "V1" || text == "V2" {
                pipeline.pipeline_type = Some(text);
            } else {
                let message = format!("unknown value {text:?}; expected one of: V1, V2");
                self.notes.error(&kind.loc, message);
            }
        }
        if let Some(variables) = obj.get("variables")
            && let Some(items) = self.list(variables)
        {
            for item in items {
                if let Some(variable) = self.variable(item) {
                    pipeline.variables.push(variable);
                }
            }
        }
        if let Some(triggers) = obj.get("triggers") {
            self.dropped(triggers, &format!("not applied: {POLLING}"));
        }
        if let Some(restart) = obj.get("restartExecutionOnUpdate")
            && restart.text().as_deref() != Some("false")
        {
            self.dropped(
                restart,
                "dropped: Sluice does not start a run when a pipeline is updated; start one with `sluice pipeline start`",
            );
        }
        let disabled = obj.get("disableInboundStageTransitions");
        if let Some(tags) = obj.get("tags") {
            self.dropped(tags, "dropped: Sluice does not store tags");
        }
        match obj.get("stages") {
            Some(stages) => {
                if let Some(items) = self.list(stages) {
                    for item in items {
                        let index = pipeline.stages.len();
                        if let Some(stage) = self.stage(item, index) {
                            pipeline.stages.push(stage);
                        }
                    }
                }
            }
            None => self
                .notes
                .error(&obj.missing("stages"), "missing required field"),
        }
        if let Some(disabled) = disabled
            && let Some(items) = self.list(disabled)
        {
            for item in items {
                self.disabled_transition(item, &pipeline);
            }
        }
        self.source_versions(&mut pipeline);
        self.check_variables(&pipeline);
        pipeline
    }

    /// `DisableInboundStageTransitions[]`: `{StageName, Reason}`, applied once the
    /// pipeline exists (Sluice keeps transitions apart from the definition).
    fn disabled_transition(&mut self, item: &Node, pipeline: &Pipeline) {
        let Some(obj) = self.object(item, &["stageName", "reason"]) else {
            return;
        };
        let stage = self.required_text(&obj, "stageName");
        let reason = self.required_text(&obj, "reason");
        let (Some(stage), Some(reason)) = (stage, reason) else {
            return;
        };
        if !pipeline.stages.iter().any(|s| s.name == stage) {
            self.notes.error(
                &item.loc,
                format!("names stage {stage:?}, which the pipeline does not have"),
            );
            return;
        }
        self.notes.warn(
            &item.loc,
            format!(
                "not part of the definition: the transition into stage {stage:?} is disabled once the pipeline \
                 is created (`sluice pipeline import` does it; after --dry-run, run \
                 `sluice pipeline disable-transition {} {stage} --reason \"{}\"`)",
                pipeline.name,
                reason.replace('"', "'")
            ),
        );
        self.transitions
            .push(super::DisabledTransition { stage, reason });
    }

    fn artifact_store(&mut self, store: &Node) {
        self.dropped(
            store,
            "AWS-only, dropped: Sluice keeps artifacts in its own store (the controller's data dir)",
        );
        let mut keys = Vec::new();
        collect_keys(store, &styled(self.cfn, "encryptionKey"), &mut keys);
        for key in keys {
            self.notes.warn(
                &key.loc,
                "dropped: Sluice does not encrypt artifacts with a KMS key; protect the controller's data dir instead",
            );
        }
    }

    fn variable(&mut self, node: &Node) -> Option<Variable> {
        let obj = self.object(node, &["name", "defaultValue", "description"])?;
        let name = self.required_text(&obj, "name");
        let default_value = match obj.get("defaultValue") {
            Some(v) => Some(self.text(v)?),
            None => None,
        };
        let description = match obj.get("description") {
            Some(v) => Some(self.text(v)?),
            None => None,
        };
        Some(Variable {
            name: name?,
            default_value,
            description,
        })
    }

    fn stage(&mut self, node: &Node, index: usize) -> Option<Stage> {
        let known = [
            "name",
            "actions",
            "blockers",
            "beforeEntry",
            "onSuccess",
            "onFailure",
        ];
        let obj = self.object(node, &known)?;
        let name = self.required_text(&obj, "name").unwrap_or_default();
        if let Some(blockers) = obj.get("blockers") {
            self.dropped(
                blockers,
                "dropped: blockers are reserved by AWS and do nothing",
            );
        }
        let stage_path = Path::default().key("stages").index(index);
        let before_entry = obj
            .get("beforeEntry")
            .and_then(|n| self.stage_conditions(n, &stage_path.key("beforeEntry")));
        let on_success = obj
            .get("onSuccess")
            .and_then(|n| self.stage_conditions(n, &stage_path.key("onSuccess")));
        let on_failure = obj
            .get("onFailure")
            .and_then(|n| self.on_failure(n, &stage_path.key("onFailure")));
        let mut actions = Vec::new();
        let mut dropped = 0;
        match obj.get("actions") {
            Some(list) => {
                for item in self.list(list).unwrap_or(&[]) {
                    match self.action(item, index, actions.len()) {
                        Converted::Kept(action) => actions.push(*action),
                        Converted::Dropped => dropped += 1,
                        Converted::Broken => {}
                    }
                }
            }
            None => self
                .notes
                .error(&obj.missing("actions"), "missing required field"),
        }
        if dropped > 0 && actions.is_empty() {
            self.notes.warn(
                obj.loc,
                "stage left out: it held only manual approvals, which --approvals drop leaves out",
            );
            let prefix = stage_path.to_string();
            self.failed_rules
                .retain(|p| !p.starts_with(&format!("{prefix}.")));
            for key in ["beforeEntry", "onSuccess", "onFailure"] {
                if let Some(node) = obj.get(key) {
                    self.notes
                        .warn(&node.loc, "left out with its stage (--approvals drop)");
                }
            }
            return None;
        }
        Some(Stage {
            name,
            actions,
            before_entry,
            on_success,
            on_failure,
        })
    }

    // Stage conditions. `out` is where the value goes in the converted definition.

    /// `beforeEntry` or `onSuccess`: `{conditions}`.
    fn stage_conditions(&mut self, node: &Node, out: &Path) -> Option<StageConditions> {
        let obj = self.object(node, &["conditions"])?;
        let conditions = match obj.get("conditions") {
            Some(list) => self.conditions(list, &out.key("conditions"))?,
            None => {
                self.notes
                    .error(&obj.missing("conditions"), "missing required field");
                return None;
            }
        };
        Some(StageConditions { conditions })
    }

    /// `onFailure`: `{result, retryConfiguration: {retryMode}, conditions}`.
    fn on_failure(&mut self, node: &Node, out: &Path) -> Option<OnFailure> {
        let obj = self.object(node, &["result", "retryConfiguration", "conditions"])?;
        let result = match obj.get("result") {
            Some(n) => self.condition_result(n)?,
            None => ConditionResult::default(),
        };
        let retry_configuration = match obj.get("retryConfiguration") {
            Some(n) => {
                let retry = self.object(n, &["retryMode"])?;
                let mode = match retry.get("retryMode") {
                    Some(m) => {
                        let text = self.text(m)?;
                        let modes = [RetryMode::FailedActions, RetryMode::AllActions];
                        match modes.into_iter().find(|r| r.as_str() == text) {
                            Some(mode) => mode,
                            None => {
                                self.notes.error(
                                    &m.loc,
                                    format!(
                                        "unknown value {text:?}; expected one of: FAILED_ACTIONS, ALL_ACTIONS"
                                    ),
                                );
                                return None;
                            }
                        }
                    }
                    // CodePipeline's default.
                    None => RetryMode::default(),
                };
                Some(RetryConfiguration { retry_mode: mode })
            }
            None => None,
        };
        let conditions = match obj.get("conditions") {
            Some(list) => self.conditions(list, &out.key("conditions"))?,
            None => Vec::new(),
        };
        Some(OnFailure {
            result,
            retry_configuration,
            conditions,
        })
    }

    fn condition_result(&mut self, node: &Node) -> Option<ConditionResult> {
        let text = self.text(node)?;
        let results = [
            ConditionResult::Fail,
            ConditionResult::Skip,
            ConditionResult::Retry,
            ConditionResult::Rollback,
        ];
        match results.into_iter().find(|r| r.as_str() == text) {
            Some(result) => Some(result),
            None => {
                self.notes.error(
                    &node.loc,
                    format!("unknown value {text:?}; expected one of: FAIL, SKIP, RETRY, ROLLBACK"),
                );
                None
            }
        }
    }

    /// A list of conditions; `None` when it is not a list (reported).
    fn conditions(&mut self, node: &Node, out: &Path) -> Option<Vec<Condition>> {
        let items = self.list(node)?;
        let mut conditions = Vec::new();
        for item in items {
            let index = conditions.len();
            if let Some(condition) = self.condition(item, &out.index(index)) {
                conditions.push(condition);
            }
        }
        Some(conditions)
    }

    fn condition(&mut self, node: &Node, out: &Path) -> Option<Condition> {
        let obj = self.object(node, &["result", "rules"])?;
        let result = match obj.get("result") {
            Some(n) => self.condition_result(n)?,
            None => ConditionResult::default(),
        };
        let mut rules = Vec::new();
        match obj.get("rules") {
            Some(list) => {
                for item in self.list(list)? {
                    let index = rules.len();
                    if let Some(rule) = self.rule(item, &out.key("rules").index(index)) {
                        rules.push(rule);
                    }
                }
            }
            None => {
                self.notes
                    .error(&obj.missing("rules"), "missing required field");
                return None;
            }
        }
        Some(Condition { result, rules })
    }

    /// One rule. VariableCheck, DeploymentWindow and Commands rules are Sluice's too; any
    /// other provider is an error, and the rule is kept as written.
    fn rule(&mut self, node: &Node, out: &Path) -> Option<Rule> {
        let known = [
            "name",
            "ruleTypeId",
            "configuration",
            "commands",
            "inputArtifacts",
            "timeoutInMinutes",
            "roleArn",
            "region",
        ];
        let errors_before = self.notes.error_count();
        let obj = self.object(node, &known)?;
        let name = self.required_text(&obj, "name");
        let Some(type_node) = obj.get("ruleTypeId") else {
            self.notes
                .error(&obj.missing("ruleTypeId"), "missing required field");
            return None;
        };
        let rule_type_id = self.rule_type(type_node)?;
        let mut config = Vec::new();
        if let Some(c) = obj.get("configuration") {
            match &c.val {
                Val::Map(entries) => config = entries.iter().map(|(k, n)| (k.clone(), n)).collect(),
                _ => {
                    self.expected::<()>(c, "a mapping of names to strings");
                }
            }
        }
        let mut configuration = BTreeMap::new();
        for (key, value) in &config {
            if let Some(text) = self.text(value) {
                configuration.insert(key.clone(), text);
            }
        }
        let commands = match obj.get("commands") {
            Some(list) => self
                .list(list)
                .unwrap_or(&[])
                .iter()
                .filter_map(|c| self.text(c))
                .collect(),
            None => Vec::new(),
        };
        let input_artifacts = self.artifacts(obj.get("inputArtifacts"), false).0;
        let timeout_in_minutes = obj.get("timeoutInMinutes").and_then(|n| self.number(n));
        if let Some(role) = obj.get("roleArn") {
            self.dropped(role, AWS_RULE_ROLE);
        }
        if let Some(region) = obj.get("region") {
            self.dropped(
                region,
                "AWS-only, dropped: Sluice checks rules itself, and runs Commands rules on an agent \
                 (choose agents with `agent` labels)",
            );
        }
        let mut rule = Rule {
            name: name?,
            rule_type_id,
            configuration,
            commands,
            input_artifacts,
            timeout_in_minutes,
            agent: BTreeMap::new(),
        };
        let provider_node = type_node
            .get(&styled(self.cfn, "provider"))
            .unwrap_or(type_node);
        let allowed: &[&str] = match rule.rule_type_id.provider.as_str() {
            "VariableCheck" => &["Variable", "Value", "Operator"],
            "DeploymentWindow" => &["Cron", "TimeZone"],
            "Commands" => &[],
            other => {
                let hint = match other {
                    "CloudWatchAlarm" => {
                        "rewrite it as a Commands rule that checks the alarm with your own tooling \
                         (e.g. `aws cloudwatch describe-alarms` on an agent with AWS credentials)"
                    }
                    "LambdaInvoke" => {
                        "rewrite it as a Commands rule that runs the check the function makes"
                    }
                    "CodeBuild" => {
                        "rewrite it as a Commands rule that runs the project's commands on an agent"
                    }
                    _ => {
                        "rewrite it as a Commands rule (shell commands on an agent that pass when they exit 0)"
                    }
                };
                self.notes.error(
                    &provider_node.loc,
                    format!(
                        "rule provider {other:?} has no Sluice equivalent: Sluice supports {} rules; \
                         {hint}; the rule is kept as written",
                        conditions::PROVIDERS.join(", ")
                    ),
                );
                self.failed_rules.push(out.to_string());
                return Some(rule);
            }
        };
        let mut ok = true;
        for (key, value) in &config {
            if !allowed.contains(&key.as_str()) {
                let expected = if allowed.is_empty() {
                    "a Commands rule takes no configuration (its shell lines are in commands)"
                        .to_owned()
                } else {
                    format!("expected one of: {}", allowed.join(", "))
                };
                self.notes.error(
                    &value.loc,
                    format!(
                        "unknown configuration key for the {} rule; {expected}",
                        rule.rule_type_id.provider
                    ),
                );
                ok = false;
            }
        }
        if rule.rule_type_id.provider == "DeploymentWindow"
            && let Some((key, node)) = config.iter().find(|(k, _)| k == "Cron")
            && let Some(cron) = rule.configuration.get(key).cloned()
        {
            match self.window_cron(node, &cron) {
                Some(converted) => {
                    rule.configuration.insert(key.clone(), converted);
                }
                None => ok = false,
            }
        }
        // Validation would report what went wrong here a second time, at the output's path.
        if !ok || self.notes.error_count() > errors_before {
            self.failed_rules.push(out.to_string());
        }
        Some(rule)
    }

    /// A DeploymentWindow `Cron` in Sluice's form. CodePipeline's has seconds first, an
    /// optional year and day-of-week numbers 1-7 for SUN-SAT; Sluice's has no year and
    /// numbers 0-6 (or 7) for SUN-SAT.
    fn window_cron(&mut self, node: &Node, cron: &str) -> Option<String> {
        let mut fields: Vec<String> = cron.split_whitespace().map(str::to_owned).collect();
        if fields.len() == 7 {
            if fields[6] == "*" {
                fields.pop();
            } else {
                self.notes.error(
                    &node.loc,
                    format!(
                        "the year field {:?} cannot be imported: Sluice's cron expressions have no year; \
                         remove it (the window is then open in every year) or add a VariableCheck rule",
                        fields[6]
                    ),
                );
                return None;
            }
        }
        if fields.len() != 6 {
            // Not CodePipeline's form; validation reports what is wrong with it.
            return Some(cron.to_owned());
        }
        let weekday = quartz_weekdays(&fields[5]);
        if weekday != fields[5] {
            self.notes.warn(
                &node.loc,
                format!(
                    "day-of-week {:?} became {weekday:?}: CodePipeline numbers the days 1-7 from Sunday, \
                     Sluice 0-6",
                    fields[5]
                ),
            );
            fields[5] = weekday;
        }
        Some(fields.join(" "))
    }

    fn rule_type(&mut self, node: &Node) -> Option<RuleTypeId> {
        let obj = self.object(node, &["category", "owner", "provider", "version"])?;
        let category = self.required_text(&obj, "category");
        if let (Some(text), Some(c)) = (&category, obj.get("category"))
            && text != "Rule"
        {
            self.notes.error(
                &c.loc,
                format!("unknown value {text:?}; a rule's category is Rule"),
            );
            return None;
        }
        let owner = match obj.get("owner") {
            Some(o) => self.text(o),
            None => Some("AWS".to_owned()),
        };
        let provider = self.required_text(&obj, "provider");
        let version = match obj.get("version") {
            Some(v) => self.text(v),
            None => Some("1".to_owned()),
        };
        Some(RuleTypeId {
            category: category?,
            owner: owner?,
            provider: provider?,
            version: version?,
        })
    }

    fn action(&mut self, node: &Node, s: usize, a: usize) -> Converted {
        let known = [
            "name",
            "actionTypeId",
            "runOrder",
            "configuration",
            "inputArtifacts",
            "outputArtifacts",
            "namespace",
            "roleArn",
            "region",
            "timeoutInMinutes",
            "commands",
            "outputVariables",
            "environmentVariables",
        ];
        let Some(obj) = self.object(node, &known) else {
            return Converted::Broken;
        };
        let name = self.required_text(&obj, "name").unwrap_or_default();
        let type_node = match obj.get("actionTypeId") {
            Some(t) => t,
            None => {
                self.notes
                    .error(&obj.missing("actionTypeId"), "missing required field");
                return Converted::Broken;
            }
        };
        let Some(aws) = self.action_type(type_node) else {
            return Converted::Broken;
        };
        let run_order = match obj.get("runOrder") {
            Some(n) => self.number(n).unwrap_or(1),
            None => 1,
        };
        let mut config = Vec::new();
        if let Some(c) = obj.get("configuration") {
            match &c.val {
                Val::Map(entries) => config = entries.iter().map(|(k, n)| (k.clone(), n)).collect(),
                _ => {
                    self.expected::<()>(c, "a mapping of names to strings");
                }
            }
        }
        let input_artifacts = self.artifacts(obj.get("inputArtifacts"), false).0;
        let (output_artifacts, files) = self.artifacts(obj.get("outputArtifacts"), true);
        let namespace = obj.get("namespace").and_then(|n| self.text(n));
        if let Some(role) = obj.get("roleArn") {
            self.dropped(role, AWS_ROLE);
        }
        if let Some(region) = obj.get("region") {
            self.dropped(
                region,
                "AWS-only, dropped: an action runs on an agent; choose agents with `agent` labels",
            );
        }
        let timeout_in_minutes = obj.get("timeoutInMinutes").and_then(|n| self.number(n));
        let mut draft = Draft {
            loc: node.loc.clone(),
            type_loc: type_node.loc.clone(),
            aws: aws.clone(),
            config,
            taken: BTreeSet::new(),
            outputs_loc: obj
                .get("outputArtifacts")
                .map(|n| n.loc.clone())
                .unwrap_or_else(|| obj.missing("outputArtifacts")),
            files,
            commands: obj.get("commands"),
            environment: obj.get("environmentVariables"),
            output_variables: obj.get("outputVariables"),
        };
        let mut action = Action {
            name,
            action_type_id: aws.clone(),
            run_order,
            configuration: BTreeMap::new(),
            input_artifacts,
            output_artifacts,
            namespace,
            timeout_in_minutes,
            agent: BTreeMap::new(),
        };
        let mut info = Info {
            stage: s,
            action: a,
            loc: node.loc.clone(),
            failed: false,
            from: draft.label(),
            sets: None,
            codebuild: false,
            config: draft
                .config
                .iter()
                .map(|(k, n)| (k.clone(), n.loc.clone(), n.text()))
                .collect(),
        };
        let errors_before = self.notes.error_count();
        let mut outcome = self.map(&mut draft, &mut action, &mut info);
        if matches!(outcome, Outcome::Mapped) {
            for (key, node) in &draft.config {
                if !draft.taken.contains(key) {
                    self.notes.error(
                        &node.loc,
                        format!(
                            "unknown configuration key for {}; not imported",
                            draft.label()
                        ),
                    );
                    outcome = Outcome::Failed;
                }
            }
            if self.notes.error_count() > errors_before {
                outcome = Outcome::Failed;
            }
        }
        match outcome {
            Outcome::Mapped => {}
            Outcome::Dropped => return Converted::Dropped,
            Outcome::FailedKept => info.failed = true,
            Outcome::Failed => {
                info.failed = true;
                info.sets = None;
                action.action_type_id = aws;
                action.configuration = draft
                    .config
                    .iter()
                    .filter(|(k, _)| !SECRET_KEYS.contains(&k.as_str()))
                    .filter_map(|(k, n)| Some((k.clone(), n.text()?)))
                    .collect();
            }
        }
        self.infos.push(info);
        Converted::Kept(Box::new(action))
    }

    fn action_type(&mut self, node: &Node) -> Option<ActionTypeId> {
        let obj = self.object(node, &["category", "owner", "provider", "version"])?;
        let category = match obj.get("category") {
            Some(c) => {
                let text = self.text(c)?;
                match Category::parse(&text) {
                    Some(category) => Some(category),
                    None => {
                        let names: Vec<&str> = Category::ALL.iter().map(|c| c.as_str()).collect();
                        self.notes.error(
                            &c.loc,
                            format!(
                                "unknown value {text:?}; expected one of: {}",
                                names.join(", ")
                            ),
                        );
                        None
                    }
                }
            }
            None => {
                self.notes
                    .error(&obj.missing("category"), "missing required field");
                None
            }
        };
        let owner = self.required_text(&obj, "owner");
        let provider = self.required_text(&obj, "provider");
        let version = match obj.get("version") {
            Some(v) => self.text(v),
            None => Some("1".to_owned()),
        };
        Some(ActionTypeId {
            category: category?,
            owner: owner?,
            provider: provider?,
            version: version?,
        })
    }

    /// Artifact names (`[{name: X}]`, or plain names) and, for outputs, their `files`.
    fn artifacts(
        &mut self,
        node: Option<&Node>,
        outputs: bool,
    ) -> (Vec<String>, Vec<(Loc, Vec<String>)>) {
        let mut names = Vec::new();
        let mut files = Vec::new();
        let Some(items) = node.and_then(|n| self.list(n)) else {
            return (names, files);
        };
        for item in items {
            if let Val::Str(name) = &item.val {
                names.push(name.clone());
                continue;
            }
            let known: &[&str] = if outputs {
                &["name", "files"]
            } else {
                &["name"]
            };
            let Some(obj) = self.object(item, known) else {
                continue;
            };
            if let Some(name) = self.required_text(&obj, "name") {
                names.push(name);
            }
            if let Some(list) = obj.get("files") {
                let paths = self
                    .list(list)
                    .unwrap_or(&[])
                    .iter()
                    .filter_map(|p| self.text(p))
                    .collect();
                files.push((list.loc.clone(), paths));
            }
        }
        (names, files)
    }

    // Providers.

    fn map(&mut self, d: &mut Draft<'_>, action: &mut Action, info: &mut Info) -> Outcome {
        let commands_only = [
            (d.commands.map(|n| n.loc.clone()), "commands"),
            (d.environment.map(|n| n.loc.clone()), "environmentVariables"),
            (d.output_variables.map(|n| n.loc.clone()), "outputVariables"),
        ];
        let is_commands = d.aws.owner == "AWS" && d.aws.provider == "Commands";
        if !is_commands {
            let mut misplaced = false;
            for (loc, field) in commands_only {
                if let Some(loc) = loc {
                    let message = format!(
                        "{} is only for Compute/AWS/Commands actions",
                        styled(self.cfn, field)
                    );
                    self.notes.error(&loc, message);
                    misplaced = true;
                }
            }
            for (loc, _) in &d.files {
                self.notes.error(
                    loc,
                    "output artifact files are only for Compute/AWS/Commands actions",
                );
                misplaced = true;
            }
            if misplaced {
                return Outcome::Failed;
            }
        }
        if self.catalog.find(&d.aws).is_some() {
            // Already a provider Sluice has (a Sluice definition, or an installed plugin).
            for (key, node) in d.config.clone() {
                d.taken.insert(key.clone());
                if let Some(text) = self.text(node) {
                    action.configuration.insert(key, text);
                }
            }
            return Outcome::Mapped;
        }
        match (
            d.aws.category,
            d.aws.owner.as_str(),
            d.aws.provider.as_str(),
        ) {
            (Category::Source, "AWS", "CodeCommit") => self.codecommit(d, action, info),
            (Category::Source, "ThirdParty", "GitHub") => self.github(d, action, info),
            (Category::Source, "AWS", "CodeStarSourceConnection") => {
                self.connection(d, action, info)
            }
            (Category::Source, "AWS", "S3") => self.s3_source(d, action, info),
            (Category::Build | Category::Test, "AWS", "CodeBuild") => {
                self.codebuild(d, action, info)
            }
            (Category::Approval, "AWS", "Manual") => self.approval(d, action),
            (Category::Invoke, "AWS", "Lambda") => self.lambda(d, action),
            (Category::Compute, "AWS", "Commands") => self.commands(d, action),
            (category, _, provider) => {
                let hint = match category {
                    Category::Source => "Sluice's sources are git and directory",
                    Category::Build | Category::Test | Category::Compute => {
                        "rewrite it as a buildspec or commands action"
                    }
                    Category::Deploy => {
                        "rewrite it as a directory or http deploy, or as a buildspec or commands action that runs the deployment"
                    }
                    Category::Invoke => "rewrite it as a wasm invoke action",
                    Category::Approval => "Sluice knows only manual approvals",
                };
                let t = &d.aws;
                self.notes.error(
                    &d.type_loc,
                    format!(
                        "{category}/{}/{provider} version {} has no Sluice equivalent: {hint}, or install a plugin \
                         that provides it; the action is kept as it is",
                        t.owner, t.version
                    ),
                );
                Outcome::Failed
            }
        }
    }

    fn git_source(
        &mut self,
        action: &mut Action,
        info: &mut Info,
        url: String,
        branch: Option<String>,
    ) {
        action.action_type_id = sluice_type(Category::Source, "git");
        action.configuration.insert("RepositoryUrl".to_owned(), url);
        if let Some(branch) = branch {
            action.configuration.insert("BranchName".to_owned(), branch);
        }
        info.sets = Some(GIT_VARIABLES);
    }

    /// Warns about change detection (on unless its key says "false").
    fn detection(&mut self, d: &Draft<'_>, key: Option<&Node>) {
        match key {
            Some(node) if node.text().as_deref() == Some("false") => {}
            Some(node) => self.dropped(node, &format!("not applied: {POLLING}")),
            None => self.notes.warn(
                &d.type_loc,
                format!("{POLLING} (AWS would detect changes here)"),
            ),
        }
    }

    fn artifact_format(&mut self, node: Option<&Node>) {
        if let Some(node) = node
            && node.text().as_deref() == Some("CODEBUILD_CLONE_REF")
        {
            self.notes.warn(
                &node.loc,
                "dropped: Sluice's git source delivers the files without .git, not a full clone; \
                 builds that run git commands need to clone the repository themselves",
            );
        }
    }

    /// The repository URL for `names` from `--map repo:`, or an error at `node`.
    fn repo_url(&mut self, node: &Node, what: &str, names: &[String]) -> Option<String> {
        if let Some(url) = self.rules.lookup(MapKind::Repo, names) {
            return Some(url);
        }
        let name = names.first().cloned().unwrap_or_default();
        let unresolved = match &node.val {
            Val::Unknown(why) => format!(" ({} is {}: {})", name, why.what, why.why),
            _ => String::new(),
        };
        self.notes.error(
            &node.loc,
            format!(
                "{what} {name:?}{unresolved} has no git URL in its configuration: pass --map repo:{name}=URL \
                 (e.g. https://git.example.com/{name}.git), or --map 'repo:*=https://git.example.com/{{name}}.git' \
                 for every repository"
            ),
        );
        None
    }

    fn codecommit(&mut self, d: &mut Draft<'_>, action: &mut Action, info: &mut Info) -> Outcome {
        let repo = d.take("RepositoryName");
        let branch = d.take("BranchName").and_then(|b| self.text(b));
        let poll = d.take("PollForSourceChanges");
        self.detection(d, poll);
        self.artifact_format(d.take("OutputArtifactFormat"));
        let Some(repo) = repo else {
            let loc = d.loc.key(&styled(self.cfn, "configuration"), None);
            self.notes
                .error(&loc.key("RepositoryName", None), "missing required field");
            return Outcome::Failed;
        };
        let Some(names) = self.names(repo) else {
            return Outcome::Failed;
        };
        match self.repo_url(repo, "CodeCommit repository", &names) {
            Some(url) => {
                self.git_source(action, info, url, branch);
                Outcome::Mapped
            }
            None => Outcome::Failed,
        }
    }

    fn github(&mut self, d: &mut Draft<'_>, action: &mut Action, info: &mut Info) -> Outcome {
        let owner = d.take("Owner").and_then(|n| self.text(n));
        let repo = d.take("Repo").and_then(|n| self.text(n));
        let branch = d.take("Branch").and_then(|n| self.text(n));
        if let Some(token) = d.take("OAuthToken") {
            // The value is a secret: it is neither copied nor shown.
            self.notes.warn(
                &token.loc,
                "dropped: the GitHub OAuth token is a secret and is not copied; Sluice's git source \
                 clones with the agent's own credentials (an ssh key or a git credential helper of \
                 the user the agent runs as), so give the agents read access to the repository",
            );
        }
        let poll = d.take("PollForSourceChanges");
        self.detection(d, poll);
        let (Some(owner), Some(repo)) = (owner, repo) else {
            let loc = d.loc.key(&styled(self.cfn, "configuration"), None);
            self.notes
                .error(&loc, "a GitHub source needs Owner and Repo");
            return Outcome::Failed;
        };
        let full = format!("{owner}/{repo}");
        let url = match self
            .rules
            .lookup(MapKind::Repo, std::slice::from_ref(&full))
        {
            Some(url) => url,
            None => {
                let url = format!("https://github.com/{full}.git");
                self.notes.warn(
                    &d.type_loc,
                    format!(
                        "the repository URL is taken to be {url}; agents need read access to it \
                         (pass --map repo:{full}=URL for another address)"
                    ),
                );
                url
            }
        };
        self.git_source(action, info, url, branch);
        Outcome::Mapped
    }

    fn connection(&mut self, d: &mut Draft<'_>, action: &mut Action, info: &mut Info) -> Outcome {
        if let Some(arn) = d.take("ConnectionArn") {
            self.dropped(
                arn,
                "dropped: Sluice's git source clones with the agent's own credentials, not through a \
                 CodeStar connection; give the agents read access to the repository",
            );
        }
        let repo = d.take("FullRepositoryId");
        let branch = d.take("BranchName").and_then(|b| self.text(b));
        self.artifact_format(d.take("OutputArtifactFormat"));
        let detect = d.take("DetectChanges");
        self.detection(d, detect);
        let Some(repo) = repo else {
            let loc = d.loc.key(&styled(self.cfn, "configuration"), None);
            self.notes
                .error(&loc.key("FullRepositoryId", None), "missing required field");
            return Outcome::Failed;
        };
        let Some(names) = self.names(repo) else {
            return Outcome::Failed;
        };
        match self.repo_url(repo, "connection repository", &names) {
            Some(url) => {
                self.git_source(action, info, url, branch);
                Outcome::Mapped
            }
            None => Outcome::Failed,
        }
    }

    fn s3_source(&mut self, d: &mut Draft<'_>, action: &mut Action, info: &mut Info) -> Outcome {
        let bucket = d.take("S3Bucket");
        let key = d.take("S3ObjectKey");
        let poll = d.take("PollForSourceChanges");
        self.detection(d, poll);
        if let Some(allow) = d.take("AllowOverrideForS3ObjectKey") {
            self.dropped(
                allow,
                "dropped: Sluice has no source overrides when a run starts",
            );
        }
        let (Some(bucket), Some(key)) = (bucket, key) else {
            let loc = d.loc.key(&styled(self.cfn, "configuration"), None);
            self.notes
                .error(&loc, "an S3 source needs S3Bucket and S3ObjectKey");
            return Outcome::Failed;
        };
        let (Some(bucket_name), Some(key_name)) = (self.text(bucket), self.text(key)) else {
            return Outcome::Failed;
        };
        let object = format!("{bucket_name}/{key_name}");
        let names = [object.clone(), bucket_name];
        let Some(path) = self.rules.lookup(MapKind::S3, &names) else {
            self.notes.error(
                &bucket.loc,
                format!(
                    "Sluice has no S3 source: it becomes a directory source, which snapshots a directory on \
                     the agent machine; pass --map s3:{object}=/absolute/dir (a directory holding what the \
                     object's zip holds)"
                ),
            );
            return Outcome::Failed;
        };
        if !path.starts_with('/') {
            self.notes.error(
                &bucket.loc,
                format!("--map s3:{object}={path}: the directory must be an absolute path on the agent machine"),
            );
            return Outcome::Failed;
        }
        action.action_type_id = sluice_type(Category::Source, "directory");
        action.configuration.insert("Path".to_owned(), path);
        info.sets = Some(DIRECTORY_VARIABLES);
        Outcome::Mapped
    }

    fn codebuild(&mut self, d: &mut Draft<'_>, action: &mut Action, info: &mut Info) -> Outcome {
        let category = if d.aws.category == Category::Test {
            Category::Test
        } else {
            Category::Build
        };
        action.action_type_id = sluice_type(category, "buildspec");
        info.codebuild = true;
        let project_node = d.take("ProjectName");
        let names = match project_node {
            Some(node) => match &node.val {
                Val::Unknown(Unknown { resource: None, .. }) => {
                    self.dropped(node, "dropped, and not resolved");
                    Vec::new()
                }
                _ => self.names(node).unwrap_or_default(),
            },
            None => Vec::new(),
        };
        let label = names.first().cloned().unwrap_or_default();
        let project = self.projects.iter().find(|p| {
            names
                .iter()
                .any(|n| *n == p.id || Some(n) == p.name.as_ref())
        });
        if let Some(node) = project_node {
            let template = match project {
                Some(p) => format!(" (resource {} of this template)", p.id),
                None => String::new(),
            };
            self.notes.warn(
                &node.loc,
                format!(
                    "dropped: Sluice runs the buildspec on an agent, not in CodeBuild project {label:?}{template}; \
                     the project's build image, compute type, service role and cache do not apply \
                     (choose agents with `agent` labels)"
                ),
            );
        }
        let mut ok = true;

        // The buildspec: a mapping for this project, the project's own, the default mapping.
        if let Some(path) = self.rules.exact(MapKind::Buildspec, &names) {
            action
                .configuration
                .insert("BuildspecPath".to_owned(), path);
        } else if let Some(spec) = project.and_then(Project::buildspec) {
            match spec.text() {
                Some(text) if text.contains('\n') => {
                    let length = text.chars().count();
                    if length > 1000 {
                        self.notes.error(
                            &spec.loc,
                            format!(
                                "the project's inline buildspec is {length} characters; a configuration value \
                                 holds at most 1000: put it in a file in the source and pass \
                                 --map buildspec:{label}=FILE"
                            ),
                        );
                        ok = false;
                    } else {
                        action.configuration.insert("Buildspec".to_owned(), text);
                    }
                }
                Some(text) if text.starts_with("arn:") => {
                    self.notes.error(
                        &spec.loc,
                        format!(
                            "the buildspec is an S3 object, which agents cannot read: put it in the source \
                             and pass --map buildspec:{label}=FILE"
                        ),
                    );
                    ok = false;
                }
                Some(text) => {
                    action
                        .configuration
                        .insert("BuildspecPath".to_owned(), text);
                }
                None => {
                    self.expected::<()>(spec, "a buildspec file name or inline buildspec");
                    ok = false;
                }
            }
        } else if let Some(path) = self.rules.wildcard(MapKind::Buildspec, &label) {
            action
                .configuration
                .insert("BuildspecPath".to_owned(), path);
        } else if project.is_none() {
            self.notes.warn(
                project_node.map_or(&d.type_loc, |n| &n.loc),
                format!(
                    "the buildspec of project {label:?} is not in this file: buildspec.yml in the primary input \
                     is used (CodeBuild's default); if the project names another, pass --map buildspec:{label}=PATH"
                ),
            );
        }

        // Variables: the project's, then the action's, which win.
        let mut variables: Vec<EnvVar> = Vec::new();
        let mut merged = false;
        if let Some(list) = project.and_then(Project::variables) {
            for item in self.list(list).unwrap_or(&[]) {
                let field = |key: &str| item.get(key).and_then(Node::text);
                let (Some(name), Some(value)) = (field("Name"), field("Value")) else {
                    ok &= self.expected::<()>(item, "{Name, Value, Type}").is_some();
                    continue;
                };
                let kind = field("Type").unwrap_or_else(|| "PLAINTEXT".to_owned());
                if kind != "PLAINTEXT" {
                    self.notes.error(
                        &item.loc,
                        format!(
                            "project variable {name} has type {kind}: the buildspec provider takes only PLAINTEXT \
                             variables; read the value another way in the buildspec, or make it PLAINTEXT"
                        ),
                    );
                    ok = false;
                    continue;
                }
                merged = true;
                variables.push(EnvVar {
                    name,
                    value,
                    kind: Some(kind),
                });
            }
        }
        let mut original = None;
        if let Some(node) = d.take("EnvironmentVariables") {
            let text = match &node.val {
                Val::List(_) | Val::Map(_) => Some(to_json(node).to_string()),
                _ => self.text(node),
            };
            match text.map(|t| (serde_json::from_str::<Vec<EnvVar>>(&t), t)) {
                Some((Ok(list), text)) => {
                    for var in list {
                        let kind = var.kind.clone().unwrap_or_else(|| "PLAINTEXT".to_owned());
                        if kind != "PLAINTEXT" {
                            self.notes.error(
                                &node.loc,
                                format!(
                                    "variable {} has type {kind}: the buildspec provider takes only PLAINTEXT \
                                     variables; read the value another way in the buildspec, or make it PLAINTEXT",
                                    var.name
                                ),
                            );
                            ok = false;
                        }
                        variables.retain(|v| v.name != var.name);
                        variables.push(var);
                    }
                    original = Some(text);
                }
                Some((Err(e), _)) => {
                    self.notes.error(
                        &node.loc,
                        format!("is not a JSON list of {{\"name\", \"value\", \"type\"}}: {e}"),
                    );
                    ok = false;
                }
                None => ok = false,
            }
        }
        match (merged, original) {
            (false, Some(text)) => {
                action
                    .configuration
                    .insert("EnvironmentVariables".to_owned(), text);
            }
            (true, _) => {
                let text = serde_json::to_string(&variables).unwrap_or_default();
                action
                    .configuration
                    .insert("EnvironmentVariables".to_owned(), text);
            }
            (false, None) => {}
        }

        if let Some(primary) = d.take("PrimarySource")
            && let Some(name) = self.text(primary)
        {
            match action.input_artifacts.iter().position(|a| *a == name) {
                Some(i) => {
                    let artifact = action.input_artifacts.remove(i);
                    action.input_artifacts.insert(0, artifact);
                }
                None => {
                    self.notes.error(
                        &primary.loc,
                        format!("names {name:?}, which is not an input artifact of this action"),
                    );
                    ok = false;
                }
            }
        }
        if let Some(batch) = d.take("BatchEnabled")
            && batch.text().as_deref() == Some("true")
        {
            self.notes.error(
                &batch.loc,
                "batch builds are not supported: the buildspec provider runs one build; \
                 set BatchEnabled to false to import",
            );
            ok = false;
        }
        d.take("CombineArtifacts");
        if ok { Outcome::Mapped } else { Outcome::Failed }
    }

    fn approval(&mut self, d: &mut Draft<'_>, action: &mut Action) -> Outcome {
        action.action_type_id = sluice_type(Category::Approval, "manual");
        let entry = self.catalog.find(&action.action_type_id);
        // The keys the approval provider declares (any, when it declares none).
        let declares = |key: &str| {
            entry.is_some_and(|e| {
                e.plugin
                    .as_ref()
                    .is_none_or(|p| p.config.iter().any(|f| f.name == key))
            })
        };
        if let Some(arn) = d.take("NotificationArn") {
            let hint = if declares("NotificationUrl") {
                "; the approval's NotificationUrl takes an http(s) URL the controller POSTs the pending approval to"
            } else {
                ""
            };
            self.dropped(
                arn,
                &format!("dropped: Sluice sends no SNS notifications{hint}"),
            );
        }
        if self.approvals == Approvals::Drop {
            self.notes.warn(
                &d.type_loc,
                "left out (--approvals drop): runs no longer wait for a person's approval here",
            );
            return Outcome::Dropped;
        }
        let mut ok = true;
        for key in ["CustomData", "ExternalEntityLink"] {
            let Some(node) = d.take(key) else { continue };
            let Some(text) = self.text(node) else {
                ok = false;
                continue;
            };
            if entry.is_none() || declares(key) {
                action.configuration.insert(key.to_owned(), text);
            } else {
                self.notes.warn(
                    &node.loc,
                    "dropped: Sluice's manual approval takes no such key",
                );
            }
        }
        if let Some(minutes) = action.timeout_in_minutes
            && declares("TimeoutMinutes")
        {
            action
                .configuration
                .insert("TimeoutMinutes".to_owned(), minutes.to_string());
        }
        if entry.is_some() {
            return if ok { Outcome::Mapped } else { Outcome::Failed };
        }
        self.notes.error(
            &d.type_loc,
            "this Sluice has no manual approval provider: the action is kept as Approval/Sluice/manual, \
             which does not validate here; pass --approvals drop to import without this gate (runs then \
             no longer wait for a person)",
        );
        Outcome::FailedKept
    }

    fn lambda(&mut self, d: &mut Draft<'_>, action: &mut Action) -> Outcome {
        let function = d.take("FunctionName");
        let parameters = d.take("UserParameters");
        let Some(function) = function else {
            let loc = d.loc.key(&styled(self.cfn, "configuration"), None);
            self.notes
                .error(&loc.key("FunctionName", None), "missing required field");
            return Outcome::Failed;
        };
        let Some(names) = self.names(function) else {
            return Outcome::Failed;
        };
        let name = names.first().cloned().unwrap_or_default();
        let Some(target) = self.rules.lookup(MapKind::Lambda, &names) else {
            self.notes.error(
                &function.loc,
                format!(
                    "a Lambda function cannot run in Sluice; a wasm invoke action runs a WASM component \
                     (built with the Sluice plugin SDK) from an input artifact instead: pass \
                     --map lambda:{name}=ARTIFACT:PATH, naming the artifact that carries the component \
                     and its path in it"
                ),
            );
            return Outcome::Failed;
        };
        let Some((artifact, path)) = target.split_once(':') else {
            self.notes.error(
                &function.loc,
                format!("--map lambda:{name}={target}: the value must be ARTIFACT:PATH"),
            );
            return Outcome::Failed;
        };
        let mut ok = true;
        if !action.output_artifacts.is_empty() {
            self.notes.error(
                &d.outputs_loc,
                "the wasm invoke provider produces no output artifacts; remove them or rewrite the \
                 action as a buildspec action",
            );
            ok = false;
        }
        action.action_type_id = sluice_type(Category::Invoke, "wasm");
        action
            .configuration
            .insert("ComponentPath".to_owned(), path.to_owned());
        action.input_artifacts.retain(|a| a != artifact);
        action.input_artifacts.insert(0, artifact.to_owned());
        if let Some(node) = parameters
            && let Some(text) = self.text(node)
        {
            if text.contains('\n') {
                self.notes.error(
                    &node.loc,
                    "spans several lines; the component's Parameters take one KEY=value per line, \
                     so UserParameters must be one line",
                );
                ok = false;
            } else {
                self.notes.warn(
                    &node.loc,
                    "passed to the component as its parameter UserParameters",
                );
                action
                    .configuration
                    .insert("Parameters".to_owned(), format!("UserParameters={text}"));
            }
        }
        if ok { Outcome::Mapped } else { Outcome::Failed }
    }

    /// Compute/AWS/Commands: commands run by the `commands` build provider.
    fn commands(&mut self, d: &mut Draft<'_>, action: &mut Action) -> Outcome {
        let mut ok = true;
        let mut lines = Vec::new();
        if let Some(list) = d.environment.and_then(|n| self.list(n)) {
            for item in list {
                let field = |key: &str| item.get(&styled(self.cfn, key)).and_then(Node::text);
                let (Some(name), Some(value)) = (field("name"), field("value")) else {
                    ok &= self.expected::<()>(item, "{name, value, type}").is_some();
                    continue;
                };
                let kind = field("type").unwrap_or_else(|| "PLAINTEXT".to_owned());
                if kind != "PLAINTEXT" {
                    self.notes.error(
                        &item.loc,
                        format!("variable {name} has type {kind}: only PLAINTEXT variables can be imported"),
                    );
                    ok = false;
                }
                lines.push(format!("export {name}='{}'", value.replace('\'', r"'\''")));
            }
        }
        match d.commands.and_then(|n| self.list(n)) {
            Some(items) => lines.extend(items.iter().filter_map(|c| self.text(c))),
            None => {
                let loc = d.loc.key(&styled(self.cfn, "commands"), None);
                self.notes.error(&loc, "missing required field");
                ok = false;
            }
        }
        if let Some(vars) = d.output_variables {
            self.notes.error(
                &vars.loc,
                "the commands provider sets no output variables; rewrite the action as a buildspec \
                 action with env.exported-variables",
            );
            ok = false;
        }
        for (i, (loc, paths)) in d.files.iter().enumerate() {
            if i > 0 {
                self.notes.error(
                    loc,
                    "the commands provider fills only the first output artifact",
                );
                ok = false;
            } else {
                action
                    .configuration
                    .insert("OutputPaths".to_owned(), paths.join("\n"));
            }
        }
        action.action_type_id = sluice_type(Category::Build, "commands");
        action
            .configuration
            .insert("Commands".to_owned(), lines.join("\n"));
        if ok { Outcome::Mapped } else { Outcome::Failed }
    }

    // Passes over the whole pipeline.

    /// CodeBuild sets CODEBUILD_RESOLVED_SOURCE_VERSION to the commit of its primary source;
    /// the buildspec provider needs `SourceVersion: #{Namespace.CommitId}` for that.
    fn source_versions(&mut self, pipeline: &mut Pipeline) {
        let mut used: BTreeSet<String> = pipeline
            .stages
            .iter()
            .flat_map(|s| s.actions.iter().filter_map(|a| a.namespace.clone()))
            .collect();
        let builds: Vec<(usize, usize)> = self
            .infos
            .iter()
            .filter(|i| i.codebuild && !i.failed)
            .map(|i| (i.stage, i.action))
            .collect();
        for (s, a) in builds {
            let action = &pipeline.stages[s].actions[a];
            if action.configuration.contains_key("SourceVersion") {
                continue;
            }
            let Some(primary) = action.input_artifacts.first().cloned() else {
                continue;
            };
            let source = self.infos.iter().find(|i| {
                !i.failed
                    && i.sets == Some(GIT_VARIABLES)
                    && pipeline.stages[i.stage].actions[i.action]
                        .output_artifacts
                        .contains(&primary)
            });
            let Some(&Info { stage, action, .. }) = source else {
                continue;
            };
            let producer = &mut pipeline.stages[stage].actions[action];
            let namespace = match &producer.namespace {
                Some(ns) => ns.clone(),
                None => {
                    let ns = (1..)
                        .map(|n| match n {
                            1 => "SourceVariables".to_owned(),
                            n => format!("SourceVariables{n}"),
                        })
                        .find(|ns| !used.contains(ns))
                        .unwrap_or_default();
                    used.insert(ns.clone());
                    producer.namespace = Some(ns.clone());
                    ns
                }
            };
            pipeline.stages[s].actions[a].configuration.insert(
                "SourceVersion".to_owned(),
                format!("#{{{namespace}.CommitId}}"),
            );
        }
    }

    /// A `#{Namespace.Var}` of a source that became a Sluice source must be one it sets.
    fn check_variables(&mut self, pipeline: &Pipeline) {
        let mut sources = BTreeMap::new();
        for info in self.infos.iter().filter(|i| !i.failed) {
            let action = &pipeline.stages[info.stage].actions[info.action];
            if let (Some(sets), Some(ns)) = (info.sets, &action.namespace) {
                sources.insert(
                    ns.clone(),
                    (
                        sets,
                        info.from.clone(),
                        action.action_type_id.provider.clone(),
                    ),
                );
            }
        }
        let mut problems = Vec::new();
        for info in &self.infos {
            let action = &pipeline.stages[info.stage].actions[info.action];
            for (key, value) in &action.configuration {
                for (ns, var) in references(value) {
                    let Some((sets, from, provider)) = sources.get(&ns) else {
                        continue;
                    };
                    if sets.contains(&var.as_str()) {
                        continue;
                    }
                    // Where the reference was written: the same key, or the key whose
                    // value became this one (UserParameters → Parameters).
                    let written = format!("#{{{ns}.{var}}}");
                    let loc = info
                        .config
                        .iter()
                        .find(|(k, _, _)| k == key)
                        .or_else(|| {
                            info.config.iter().find(|(_, _, text)| {
                                text.as_ref().is_some_and(|t| t.contains(&written))
                            })
                        })
                        .map_or(&info.loc, |(_, loc, _)| loc)
                        .clone();
                    problems.push((
                        loc,
                        format!(
                            "#{{{ns}.{var}}}: the {from} source became Sluice's {provider} source, which does not \
                             set {var} (it sets {}); change the reference",
                            sets.join(", ")
                        ),
                    ));
                }
            }
        }
        for (loc, message) in problems {
            self.notes.error(&loc, message);
        }
    }
}

/// Configuration keys whose values are secrets: never copied.
const SECRET_KEYS: &[&str] = &["OAuthToken"];

fn sluice_type(category: Category, provider: &str) -> ActionTypeId {
    ActionTypeId {
        category,
        owner: "Sluice".to_owned(),
        provider: provider.to_owned(),
        version: "1".to_owned(),
    }
}

/// CodeBuild's environment variable, as CodePipeline writes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct EnvVar {
    name: String,
    value: String,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    kind: Option<String>,
}

/// `(namespace, variable)` of every `#{namespace.variable}` in `text`.
fn references(text: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("#{") {
        rest = &rest[start + 2..];
        let Some(end) = rest.find('}') else { break };
        if let Some((ns, var)) = rest[..end].split_once('.') {
            found.push((ns.trim().to_owned(), var.trim().to_owned()));
        }
        rest = &rest[end + 1..];
    }
    found
}

/// A Quartz day-of-week field (1-7 = SUN-SAT) with Sluice's numbers (0-6 = SUN-SAT).
/// Names stay; the numbers after `#` (the nth weekday) and `/` (a step) are not days.
fn quartz_weekdays(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars().peekable();
    let mut previous = None;
    while let Some(c) = chars.next() {
        if !c.is_ascii_digit() {
            out.push(c);
            previous = Some(c);
            continue;
        }
        let mut digits = c.to_string();
        while let Some(d) = chars.next_if(char::is_ascii_digit) {
            digits.push(d);
        }
        match digits.parse::<u32>() {
            Ok(day) if day >= 1 && !matches!(previous, Some('#' | '/')) => {
                out.push_str(&(day - 1).to_string());
            }
            _ => out.push_str(&digits),
        }
        previous = digits.chars().last();
    }
    out
}

/// The first value in `node` that could not be resolved.
fn first_unknown(node: &Node) -> Option<&Unknown> {
    match &node.val {
        Val::Unknown(why) => Some(why),
        Val::List(items) => items.iter().find_map(first_unknown),
        Val::Map(entries) => entries.iter().find_map(|(_, n)| first_unknown(n)),
        _ => None,
    }
}

/// Every value under a key named `key`, at any depth.
fn collect_keys<'n>(node: &'n Node, key: &str, found: &mut Vec<&'n Node>) {
    match &node.val {
        Val::List(items) => items.iter().for_each(|n| collect_keys(n, key, found)),
        Val::Map(entries) => {
            for (k, n) in entries {
                if k == key {
                    found.push(n);
                } else {
                    collect_keys(n, key, found);
                }
            }
        }
        _ => {}
    }
}

fn to_json(node: &Node) -> serde_json::Value {
    use serde_json::Value;
    match &node.val {
        Val::Null | Val::Unknown(_) => Value::Null,
        Val::Bool(b) => Value::Bool(*b),
        Val::Num(n) | Val::Str(n) => Value::String(n.clone()),
        Val::List(items) => Value::Array(items.iter().map(to_json).collect()),
        Val::Map(entries) => Value::Object(
            entries
                .iter()
                .map(|(k, n)| (k.clone(), to_json(n)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::quartz_weekdays;

    #[test]
    fn quartz_weekday_numbers_become_sluice_ones() {
        for (quartz, sluice) in [
            ("?", "?"),
            ("*", "*"),
            ("MON-FRI", "MON-FRI"),
            ("2-6", "1-5"),
            ("1,7", "0,6"),
            ("6L", "5L"),
            ("2#3", "1#3"),
            ("1/2", "0/2"),
            ("*/2", "*/2"),
        ] {
            assert_eq!(quartz_weekdays(quartz), sluice, "{quartz}");
        }
    }
}
