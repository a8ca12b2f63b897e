//! The pipeline model. Its serde form is Sluice's canonical JSON, which [`crate::parse`]
//! accepts back.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

pub use crate::triggers::{Polling, Schedule, Watch};

/// A pipeline: stages that run one after another, each holding actions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Pipeline {
    /// Unique name: 1–100 of `A-Za-z0-9.@-_`.
    pub name: String,
    /// What happens when a run starts while another is in progress.
    #[serde(default)]
    pub execution_mode: ExecutionMode,
    /// `V1` or `V2`, as given; stored but without effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_type: Option<String>,
    /// Pipeline-level variables, overridable when a run is started.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variables: Vec<Variable>,
    /// The stages, in order; the first holds only Source actions.
    pub stages: Vec<Stage>,
    /// Sluice extension: cron schedules that start the pipeline.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedules: Vec<Schedule>,
    /// Sluice extension: local directories whose changes start the pipeline.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub watch: Vec<Watch>,
    /// Sluice extension: poll the Source actions' plugins for new revisions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub polling: Option<Polling>,
    /// Git triggers (CodePipeline V2): which webhook events start a run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub triggers: Vec<crate::git_trigger::Trigger>,
}

impl Pipeline {
    /// The canonical JSON form (pretty-printed); `parse` reads it back to an equal pipeline.
    pub fn to_json(&self) -> String {
        // Only strings, integers, lists and string-keyed maps: serialising cannot fail.
        serde_json::to_string_pretty(self).expect("pipeline serialises to JSON")
    }

    /// The action named `action` in the stage named `stage`.
    pub fn action(&self, stage: &str, action: &str) -> Option<&Action> {
        self.stages
            .iter()
            .find(|s| s.name == stage)?
            .actions
            .iter()
            .find(|a| a.name == action)
    }
}

/// A pipeline-level variable, referenced as `#{variables.NAME}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Variable {
    /// 1–128 of `A-Za-z0-9@-_`.
    pub name: String,
    /// Value used when a run does not override it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_value: Option<String>,
    /// Free text for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A stage: its actions run by `runOrder`, equal numbers in parallel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Stage {
    /// Unique within the pipeline.
    pub name: String,
    /// 1–50 actions.
    pub actions: Vec<Action>,
    /// Conditions checked before the stage is entered (CodePipeline V2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_entry: Option<StageConditions>,
    /// Conditions checked once all of the stage's actions have succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_success: Option<StageConditions>,
    /// What happens when the stage fails: retry it once, or roll it back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<OnFailure>,
}

/// A stage's `beforeEntry` or `onSuccess`: the condition checked before the stage
/// starts, or after its actions succeeded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StageConditions {
    /// Exactly one condition, as in CodePipeline.
    pub conditions: Vec<Condition>,
}

/// A stage's `onFailure`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OnFailure {
    /// RETRY (once, automatically), ROLLBACK, or FAIL (the default: nothing more).
    #[serde(default)]
    pub result: ConditionResult,
    /// With RETRY: which actions run again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_configuration: Option<RetryConfiguration>,
    /// With ROLLBACK: at most one condition; the stage rolls back only if it passes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// How an automatic retry runs the stage again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryConfiguration {
    /// FAILED_ACTIONS or ALL_ACTIONS.
    pub retry_mode: RetryMode,
}

/// Which actions a retry runs again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RetryMode {
    /// Only the actions whose latest attempt failed.
    #[default]
    FailedActions,
    /// The whole stage, from its first runOrder.
    AllActions,
}

impl RetryMode {
    /// The mode as written in definitions.
    pub fn as_str(self) -> &'static str {
        match self {
            RetryMode::FailedActions => "FAILED_ACTIONS",
            RetryMode::AllActions => "ALL_ACTIONS",
        }
    }
}

/// A condition: it passes when all of its rules pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Condition {
    /// What happens to the stage when the condition does not pass.
    #[serde(default)]
    pub result: ConditionResult,
    /// 1–5 rules.
    pub rules: Vec<Rule>,
}

/// What a condition does to its stage: for `beforeEntry` and `onSuccess`, when one of
/// its rules fails; for `onFailure`, when the stage fails (and its rules pass).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConditionResult {
    /// The stage (and the execution) fails; a person may override it.
    #[default]
    Fail,
    /// The stage is skipped and the execution goes on to the next stage (`beforeEntry`).
    Skip,
    /// The stage is retried automatically, once (`onFailure`).
    Retry,
    /// The stage fails and a ROLLBACK execution runs it again with the artifacts and
    /// variables of the last execution that succeeded in it (`onSuccess`, `onFailure`).
    Rollback,
}

impl ConditionResult {
    /// The result as written in definitions.
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionResult::Fail => "FAIL",
            ConditionResult::Skip => "SKIP",
            ConditionResult::Retry => "RETRY",
            ConditionResult::Rollback => "ROLLBACK",
        }
    }
}

/// One rule of a condition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    /// Unique within the condition.
    pub name: String,
    /// Which rule provider checks it.
    pub rule_type_id: RuleTypeId,
    /// Provider settings.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub configuration: BTreeMap<String, String>,
    /// `Commands` rules: shell commands run on an agent; the rule passes if they exit 0.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commands: Vec<String>,
    /// `Commands` rules: artifacts of earlier actions the commands run against.
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "artifacts")]
    pub input_artifacts: Vec<String>,
    /// `Commands` rules: how long the commands may run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_in_minutes: Option<u32>,
    /// `Commands` rules: labels the agent that runs them must have.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub agent: BTreeMap<String, String>,
}

/// Identifies a rule provider: `VariableCheck`, `DeploymentWindow` or `Commands`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleTypeId {
    /// Always `Rule`.
    pub category: String,
    /// `AWS` (as CodePipeline writes it) or `Sluice`.
    #[serde(default = "default_rule_owner")]
    pub owner: String,
    /// `VariableCheck`, `DeploymentWindow` or `Commands`.
    pub provider: String,
    /// `"1"`.
    #[serde(default = "default_version")]
    pub version: String,
}

pub(crate) fn default_rule_owner() -> String {
    "AWS".to_owned()
}

/// One action: a provider invocation with its configuration and artifacts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Action {
    /// Unique within the stage.
    pub name: String,
    /// Which provider runs the action.
    pub action_type_id: ActionTypeId,
    /// 1–999; actions with the same number run in parallel.
    #[serde(default = "default_run_order")]
    pub run_order: u32,
    /// Provider settings; values may contain `#{namespace.variable}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub configuration: BTreeMap<String, String>,
    /// Names of artifacts produced by earlier actions.
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "artifacts")]
    pub input_artifacts: Vec<String>,
    /// Names of artifacts this action produces, unique in the pipeline.
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "artifacts")]
    pub output_artifacts: Vec<String>,
    /// Namespace under which the action's output variables are visible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Time limit for the action, 1–86400 minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_in_minutes: Option<u32>,
    /// Sluice extension: labels an agent must have (all of them) to run this action.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub agent: BTreeMap<String, String>,
}

pub(crate) fn default_run_order() -> u32 {
    1
}

/// Identifies a provider in the [`crate::Catalog`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ActionTypeId {
    /// Kind of action.
    pub category: Category,
    /// `Sluice` for built-in providers.
    #[serde(default = "default_owner")]
    pub owner: String,
    /// Provider name, e.g. `git` or `commands`.
    pub provider: String,
    /// Provider version, a string such as `"1"`.
    #[serde(default = "default_version")]
    pub version: String,
}

pub(crate) fn default_owner() -> String {
    "Sluice".to_owned()
}

pub(crate) fn default_version() -> String {
    "1".to_owned()
}

/// The category of an action, written as these exact words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[allow(missing_docs)] // the variant names are the documentation
pub enum Category {
    Source,
    Build,
    Test,
    Deploy,
    Approval,
    Invoke,
    Compute,
}

impl Category {
    /// Every category, in declaration order.
    pub const ALL: [Category; 7] = [
        Category::Source,
        Category::Build,
        Category::Test,
        Category::Deploy,
        Category::Approval,
        Category::Invoke,
        Category::Compute,
    ];

    /// The category written as in definitions, e.g. "Build".
    pub fn parse(text: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|c| c.as_str() == text)
    }

    /// The category's name as written in definitions.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Source => "Source",
            Category::Build => "Build",
            Category::Test => "Test",
            Category::Deploy => "Deploy",
            Category::Approval => "Approval",
            Category::Invoke => "Invoke",
            Category::Compute => "Compute",
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How runs that overlap are handled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ExecutionMode {
    /// A newer run overtakes an older one waiting between stages (the default).
    #[default]
    Superseded,
    /// Runs wait for each other, in order.
    Queued,
    /// Runs proceed independently of each other.
    Parallel,
}

impl ExecutionMode {
    /// Every mode, in declaration order.
    pub const ALL: [ExecutionMode; 3] = [
        ExecutionMode::Superseded,
        ExecutionMode::Queued,
        ExecutionMode::Parallel,
    ];

    /// The mode's name as written in definitions.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionMode::Superseded => "SUPERSEDED",
            ExecutionMode::Queued => "QUEUED",
            ExecutionMode::Parallel => "PARALLEL",
        }
    }
}

impl fmt::Display for ExecutionMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Artifact lists are `[{"name": ...}]` in JSON (plain strings are accepted too).
mod artifacts {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize)]
    struct NameRef<'a> {
        name: &'a str,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Named {
        name: String,
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Artifact {
        Plain(String),
        Named(Named),
    }

    pub fn serialize<S: Serializer>(names: &[String], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(names.iter().map(|name| NameRef { name }))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        let items = Vec::<Artifact>::deserialize(d)?;
        Ok(items
            .into_iter()
            .map(|item| match item {
                Artifact::Plain(name) | Artifact::Named(Named { name }) => name,
            })
            .collect())
    }
}
