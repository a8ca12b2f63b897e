//! From text to [`Pipeline`]: a walker over the `serde_json::Value` tree that checks shape,
//! field types and field names, collecting every error instead of stopping at the first.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::diag::{Diagnostics, Path, Report};
use crate::model::{
    self, Action, ActionTypeId, Category, Condition, ConditionResult, ExecutionMode, OnFailure,
    Pipeline, RetryConfiguration, RetryMode, Rule, RuleTypeId, Stage, StageConditions, Variable,
};
use crate::yaml::{self, Source};
use crate::{Format, Parsed};

mod git_triggers;
mod schedules;

/// A parsed document, with what [`crate::parse_and_validate`] needs to place its errors.
pub(crate) struct Document {
    pub parsed: Parsed,
    /// `pipeline` for wrapped CodePipeline JSON, else empty.
    pub prefix: Path,
    pub source: Source,
    /// Problems found while reading a document that still yielded a whole pipeline
    /// (unknown fields, for instance); validation runs anyway so all problems show.
    pub errors: Vec<crate::Diagnostic>,
}

pub(crate) fn parse_document(text: &str, format: Option<Format>) -> Result<Document, Diagnostics> {
    let mut errors = Report::default();
    let (root, source) = match format.unwrap_or_else(|| Format::detect(text)) {
        Format::Json => match serde_json::from_str(text) {
            // JSON is YAML too: a second pass recovers the line numbers for diagnostics.
            Ok(root) => match yaml::load(text, &mut Report::default()) {
                Ok((_, source)) => (root, source),
                Err(_) => (root, Source::default()),
            },
            Err(e) => return Err(Diagnostics::whole(format!("invalid JSON: {e}"))),
        },
        Format::Yaml => yaml::load(text, &mut errors)?,
    };
    let mut walker = Walker {
        errors,
        warnings: Report::default(),
        source: &source,
    };
    let (prefix, pipeline) = walker.document(&root);
    let Walker {
        errors, warnings, ..
    } = walker;
    let root_path = Path::default();
    match pipeline {
        Some(pipeline) => {
            let warnings = warnings.finish(&root_path, &source.lines);
            let errors = errors.finish(&root_path, &source.lines);
            let parsed = Parsed { pipeline, warnings };
            Ok(Document {
                parsed,
                prefix,
                source,
                errors,
            })
        }
        None => Err(Diagnostics(errors.finish(&root_path, &source.lines))),
    }
}

/// The fields an object may have.
struct Fields {
    /// Fields we read, separated by spaces.
    known: &'static str,
    /// Fields accepted with a warning, and the warning.
    ignored: &'static [(&'static str, &'static str)],
}

const AWS_ROLE: &str =
    "AWS-only field, ignored: Sluice agents run actions with their own credentials";
const AWS_STORE: &str = "AWS-only field, ignored: Sluice stores artifacts itself";

const WRAPPER: Fields = Fields {
    known: "pipeline metadata",
    ignored: &[("tags", "tags are not stored by Sluice; ignored")],
};
const PIPELINE: Fields = Fields {
    known: "name executionMode pipelineType variables stages schedules watch polling triggers",
    ignored: &[
        ("roleArn", AWS_ROLE),
        ("artifactStore", AWS_STORE),
        ("artifactStores", AWS_STORE),
        (
            "version",
            "ignored: Sluice numbers pipeline versions itself",
        ),
    ],
};
const VARIABLE: Fields = Fields {
    known: "name defaultValue description",
    ignored: &[],
};
const STAGE: Fields = Fields {
    known: "name actions beforeEntry onSuccess onFailure",
    ignored: &[("blockers", "blockers are not supported yet; ignored")],
};
const ACTION: Fields = Fields {
    known: "name actionTypeId runOrder configuration inputArtifacts outputArtifacts namespace \
            timeoutInMinutes agent",
    ignored: &[
        ("roleArn", AWS_ROLE),
        (
            "region",
            "AWS-only field, ignored: choose where an action runs with `agent` labels",
        ),
    ],
};
const BEFORE_ENTRY: Fields = Fields {
    known: "conditions",
    ignored: &[],
};
const ON_FAILURE: Fields = Fields {
    known: "result retryConfiguration conditions",
    ignored: &[],
};
const RETRY_CONFIGURATION: Fields = Fields {
    known: "retryMode",
    ignored: &[],
};
const CONDITION: Fields = Fields {
    known: "result rules",
    ignored: &[],
};
const RULE: Fields = Fields {
    known: "name ruleTypeId configuration commands inputArtifacts timeoutInMinutes agent",
    ignored: &[
        ("roleArn", AWS_ROLE),
        (
            "region",
            "AWS-only field, ignored: Commands rules run on agents chosen by `agent` labels",
        ),
    ],
};
const RULE_TYPE_ID: Fields = Fields {
    known: "category owner provider version",
    ignored: &[],
};
const ACTION_TYPE_ID: Fields = Fields {
    known: "category owner provider version",
    ignored: &[],
};
const ARTIFACT: Fields = Fields {
    known: "name",
    ignored: &[],
};

/// An object whose field names have been checked.
struct Object<'v> {
    map: &'v Map<String, Value>,
    path: Path,
}

struct Walker<'s> {
    errors: Report,
    warnings: Report,
    source: &'s Source,
}

impl Walker<'_> {
    /// Reads the root, unwrapping `{"pipeline": ...}`; returns the prefix of pipeline paths.
    fn document(&mut self, root: &Value) -> (Path, Option<Pipeline>) {
        let root_path = Path::default();
        if root.is_null() {
            self.errors.push(
                &root_path,
                "the document is empty; expected a pipeline definition",
            );
            return (root_path, None);
        }
        let wrapped = root
            .as_object()
            .is_some_and(|map| map.contains_key("pipeline"));
        if !wrapped {
            return (root_path.clone(), self.pipeline(root, &root_path));
        }
        let Some(wrapper) = self.object(root, &root_path, &WRAPPER) else {
            return (root_path, None);
        };
        let prefix = root_path.key("pipeline");
        let pipeline = self.required(&wrapper, "pipeline", |w, v, p| w.pipeline(v, p));
        (prefix, pipeline)
    }

    fn pipeline(&mut self, value: &Value, path: &Path) -> Option<Pipeline> {
        let obj = self.object(value, path, &PIPELINE)?;
        let name = self.required(&obj, "name", Self::string);
        let modes = ExecutionMode::ALL.map(|m| (m.as_str(), m));
        let execution_mode = self.optional(&obj, "executionMode", |w, v, p| w.choice(v, p, &modes));
        let types = [("V1", "V1"), ("V2", "V2")];
        let pipeline_type = self.optional(&obj, "pipelineType", |w, v, p| w.choice(v, p, &types));
        let variables = self.optional(&obj, "variables", |w, v, p| w.list(v, p, Self::variable));
        let stages = self.required(&obj, "stages", |w, v, p| w.list(v, p, Self::stage));
        let schedules = self.optional(&obj, "schedules", |w, v, p| w.list(v, p, Self::schedule));
        let watch = self.optional(&obj, "watch", |w, v, p| w.list(v, p, Self::watch));
        let polling = self.optional(&obj, "polling", Self::polling);
        let triggers = self.optional(&obj, "triggers", |w, v, p| w.list(v, p, Self::trigger));
        Some(Pipeline {
            name: name?,
            execution_mode: execution_mode?.unwrap_or_default(),
            pipeline_type: pipeline_type?.map(str::to_owned),
            variables: variables?.unwrap_or_default(),
            stages: stages?,
            schedules: schedules?.unwrap_or_default(),
            watch: watch?.unwrap_or_default(),
            polling: polling?,
            triggers: triggers?.unwrap_or_default(),
        })
    }

    fn variable(&mut self, value: &Value, path: &Path) -> Option<Variable> {
        let obj = self.object(value, path, &VARIABLE)?;
        let name = self.required(&obj, "name", Self::string);
        let default_value = self.optional(&obj, "defaultValue", Self::scalar_string);
        let description = self.optional(&obj, "description", Self::string);
        Some(Variable {
            name: name?,
            default_value: default_value?,
            description: description?,
        })
    }

    fn stage(&mut self, value: &Value, path: &Path) -> Option<Stage> {
        let obj = self.object(value, path, &STAGE)?;
        let name = self.required(&obj, "name", Self::string);
        let actions = self.required(&obj, "actions", |w, v, p| w.list(v, p, Self::action));
        let before_entry = self.optional(&obj, "beforeEntry", Self::stage_conditions);
        let on_success = self.optional(&obj, "onSuccess", Self::stage_conditions);
        let on_failure = self.optional(&obj, "onFailure", Self::on_failure);
        Some(Stage {
            name: name?,
            actions: actions?,
            before_entry: before_entry?,
            on_success: on_success?,
            on_failure: on_failure?,
        })
    }

    fn stage_conditions(&mut self, value: &Value, path: &Path) -> Option<StageConditions> {
        let obj = self.object(value, path, &BEFORE_ENTRY)?;
        let conditions = self.required(&obj, "conditions", |w, v, p| w.list(v, p, Self::condition));
        Some(StageConditions {
            conditions: conditions?,
        })
    }

    fn on_failure(&mut self, value: &Value, path: &Path) -> Option<OnFailure> {
        let obj = self.object(value, path, &ON_FAILURE)?;
        let result = self.optional(&obj, "result", Self::condition_result);
        let retry_configuration =
            self.optional(&obj, "retryConfiguration", Self::retry_configuration);
        let conditions = self.optional(&obj, "conditions", |w, v, p| w.list(v, p, Self::condition));
        Some(OnFailure {
            result: result?.unwrap_or_default(),
            retry_configuration: retry_configuration?,
            conditions: conditions?.unwrap_or_default(),
        })
    }

    fn retry_configuration(&mut self, value: &Value, path: &Path) -> Option<RetryConfiguration> {
        let obj = self.object(value, path, &RETRY_CONFIGURATION)?;
        let modes = [
            ("FAILED_ACTIONS", RetryMode::FailedActions),
            ("ALL_ACTIONS", RetryMode::AllActions),
        ];
        let retry_mode = self.required(&obj, "retryMode", |w, v, p| w.choice(v, p, &modes));
        Some(RetryConfiguration {
            retry_mode: retry_mode?,
        })
    }

    fn condition_result(&mut self, value: &Value, path: &Path) -> Option<ConditionResult> {
        let results = [
            ("FAIL", ConditionResult::Fail),
            ("SKIP", ConditionResult::Skip),
            ("RETRY", ConditionResult::Retry),
            ("ROLLBACK", ConditionResult::Rollback),
        ];
        self.choice(value, path, &results)
    }

    fn condition(&mut self, value: &Value, path: &Path) -> Option<Condition> {
        let obj = self.object(value, path, &CONDITION)?;
        let result = self.optional(&obj, "result", Self::condition_result);
        let rules = self.required(&obj, "rules", |w, v, p| w.list(v, p, Self::rule));
        Some(Condition {
            result: result?.unwrap_or_default(),
            rules: rules?,
        })
    }

    fn rule(&mut self, value: &Value, path: &Path) -> Option<Rule> {
        let obj = self.object(value, path, &RULE)?;
        let name = self.required(&obj, "name", Self::string);
        let rule_type_id = self.required(&obj, "ruleTypeId", Self::rule_type_id);
        let configuration = self.optional(&obj, "configuration", Self::string_map);
        let commands = self.optional(&obj, "commands", |w, v, p| w.list(v, p, Self::string));
        let inputs = self.optional(&obj, "inputArtifacts", |w, v, p| {
            w.list(v, p, Self::artifact)
        });
        let timeout_in_minutes = self.optional(&obj, "timeoutInMinutes", Self::integer);
        let agent = self.optional(&obj, "agent", Self::string_map);
        Some(Rule {
            name: name?,
            rule_type_id: rule_type_id?,
            configuration: configuration?.unwrap_or_default(),
            commands: commands?.unwrap_or_default(),
            input_artifacts: inputs?.unwrap_or_default(),
            timeout_in_minutes: timeout_in_minutes?,
            agent: agent?.unwrap_or_default(),
        })
    }

    fn rule_type_id(&mut self, value: &Value, path: &Path) -> Option<RuleTypeId> {
        let obj = self.object(value, path, &RULE_TYPE_ID)?;
        let category = self.required(&obj, "category", Self::string);
        let owner = self.optional(&obj, "owner", Self::string);
        let provider = self.required(&obj, "provider", Self::string);
        let version = self.optional(&obj, "version", Self::scalar_string);
        Some(RuleTypeId {
            category: category?,
            owner: owner?.unwrap_or_else(model::default_rule_owner),
            provider: provider?,
            version: version?.unwrap_or_else(model::default_version),
        })
    }

    fn action(&mut self, value: &Value, path: &Path) -> Option<Action> {
        let obj = self.object(value, path, &ACTION)?;
        let name = self.required(&obj, "name", Self::string);
        let action_type_id = self.required(&obj, "actionTypeId", Self::action_type_id);
        let run_order = self.optional(&obj, "runOrder", Self::integer);
        let configuration = self.optional(&obj, "configuration", Self::string_map);
        let inputs = self.optional(&obj, "inputArtifacts", |w, v, p| {
            w.list(v, p, Self::artifact)
        });
        let outputs = self.optional(&obj, "outputArtifacts", |w, v, p| {
            w.list(v, p, Self::artifact)
        });
        let namespace = self.optional(&obj, "namespace", Self::string);
        let timeout_in_minutes = self.optional(&obj, "timeoutInMinutes", Self::integer);
        let agent = self.optional(&obj, "agent", Self::string_map);
        Some(Action {
            name: name?,
            action_type_id: action_type_id?,
            run_order: run_order?.unwrap_or_else(model::default_run_order),
            configuration: configuration?.unwrap_or_default(),
            input_artifacts: inputs?.unwrap_or_default(),
            output_artifacts: outputs?.unwrap_or_default(),
            namespace: namespace?,
            timeout_in_minutes: timeout_in_minutes?,
            agent: agent?.unwrap_or_default(),
        })
    }

    fn action_type_id(&mut self, value: &Value, path: &Path) -> Option<ActionTypeId> {
        let obj = self.object(value, path, &ACTION_TYPE_ID)?;
        let categories = Category::ALL.map(|c| (c.as_str(), c));
        let category = self.required(&obj, "category", |w, v, p| w.choice(v, p, &categories));
        let owner = self.optional(&obj, "owner", Self::string);
        let provider = self.required(&obj, "provider", Self::string);
        // YAML authors often write `version: 1`.
        let version = self.optional(&obj, "version", Self::scalar_string);
        Some(ActionTypeId {
            category: category?,
            owner: owner?.unwrap_or_else(model::default_owner),
            provider: provider?,
            version: version?.unwrap_or_else(model::default_version),
        })
    }

    /// An artifact: `{name: X}`, or (Sluice convenience) just `X`.
    fn artifact(&mut self, value: &Value, path: &Path) -> Option<String> {
        if value.is_string() {
            return self.string(value, path);
        }
        if !value.is_object() {
            return self.type_error(value, path, "an artifact name or {name: ...}");
        }
        let obj = self.object(value, path, &ARTIFACT)?;
        self.required(&obj, "name", Self::string)
    }

    // Generic readers. Each reports its own errors and returns `None` after an error.

    /// Checks that `value` is an object and that its field names are known.
    fn object<'v>(&mut self, value: &'v Value, path: &Path, fields: &Fields) -> Option<Object<'v>> {
        let Some(map) = value.as_object() else {
            return self.type_error(value, path, "a mapping");
        };
        let known = || fields.known.split_whitespace();
        let accepted: Vec<&str> = known().chain(fields.ignored.iter().map(|f| f.0)).collect();
        for key in map.keys() {
            let field_path = path.key(key);
            if let Some((_, warning)) = fields.ignored.iter().find(|(name, _)| name == key) {
                self.warnings.push(&field_path, *warning);
            } else if !known().any(|name| name == key) {
                let mut message =
                    format!("unknown field; expected one of: {}", accepted.join(", "));
                if let Some(guess) = accepted.iter().find(|name| similar(key, name)) {
                    message.push_str(&format!("; did you mean {guess}?"));
                }
                self.errors.push(&field_path, message);
            }
        }
        Some(Object {
            map,
            path: path.clone(),
        })
    }

    /// Reads a field that must be present (`null` counts as absent).
    fn required<T>(
        &mut self,
        obj: &Object<'_>,
        key: &str,
        read: impl FnOnce(&mut Self, &Value, &Path) -> Option<T>,
    ) -> Option<T> {
        let path = obj.path.key(key);
        match obj.map.get(key).filter(|v| !v.is_null()) {
            Some(value) => read(self, value, &path),
            None => {
                self.errors.push(&path, "missing required field");
                None
            }
        }
    }

    /// Reads a field that may be absent (`null` counts as absent): `Some(None)` if absent,
    /// `None` after an error.
    fn optional<T>(
        &mut self,
        obj: &Object<'_>,
        key: &str,
        read: impl FnOnce(&mut Self, &Value, &Path) -> Option<T>,
    ) -> Option<Option<T>> {
        match obj.map.get(key).filter(|v| !v.is_null()) {
            Some(value) => read(self, value, &obj.path.key(key)).map(Some),
            None => Some(None),
        }
    }

    fn list<T>(
        &mut self,
        value: &Value,
        path: &Path,
        mut read: impl FnMut(&mut Self, &Value, &Path) -> Option<T>,
    ) -> Option<Vec<T>> {
        let Some(items) = value.as_array() else {
            return self.type_error(value, path, "a list");
        };
        // Read every item, even after a failure, so that all errors are reported.
        let read: Vec<Option<T>> = items
            .iter()
            .enumerate()
            .map(|(i, item)| read(self, item, &path.index(i)))
            .collect();
        read.into_iter().collect()
    }

    fn string(&mut self, value: &Value, path: &Path) -> Option<String> {
        match value {
            Value::String(s) => Some(s.clone()),
            _ => self.type_error(value, path, "a string"),
        }
    }

    /// A string, or a number or boolean converted to its text (as CodePipeline expects).
    fn scalar_string(&mut self, value: &Value, path: &Path) -> Option<String> {
        let hint = match value {
            Value::String(s) => return Some(s.clone()),
            Value::Bool(b) => return Some(b.to_string()),
            Value::Number(n) => {
                let text = self.source.numbers.get(path).cloned();
                return Some(text.unwrap_or_else(|| n.to_string()));
            }
            Value::Null => "write \"\" for an empty value",
            _ => "to pass structured data, write it as a JSON string",
        };
        let message = format!("expected a string, found {}; {hint}", kind(value));
        self.errors.push(path, message);
        None
    }

    fn integer(&mut self, value: &Value, path: &Path) -> Option<u32> {
        match value.as_u64().map(u32::try_from) {
            Some(Ok(n)) => Some(n),
            _ => self.type_error(value, path, "a whole number"),
        }
    }

    /// A map of strings to strings; numbers and booleans are converted to text.
    fn string_map(&mut self, value: &Value, path: &Path) -> Option<BTreeMap<String, String>> {
        let Some(map) = value.as_object() else {
            return self.type_error(value, path, "a mapping of names to strings");
        };
        let mut strings = BTreeMap::new();
        let mut failed = false;
        for (key, value) in map {
            match self.scalar_string(value, &path.key(key)) {
                Some(text) => {
                    strings.insert(key.clone(), text);
                }
                None => failed = true,
            }
        }
        (!failed).then_some(strings)
    }

    fn choice<T: Copy>(&mut self, value: &Value, path: &Path, choices: &[(&str, T)]) -> Option<T> {
        let Some(text) = value.as_str() else {
            return self.type_error(value, path, "a string");
        };
        let found = choices
            .iter()
            .find(|(name, _)| *name == text)
            .map(|(_, choice)| *choice);
        if found.is_none() {
            let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
            self.errors.push(
                path,
                format!(
                    "unknown value {text:?}; expected one of: {}",
                    names.join(", ")
                ),
            );
        }
        found
    }

    fn type_error<T>(&mut self, value: &Value, path: &Path, expected: &str) -> Option<T> {
        let found = match value {
            Value::Number(_) | Value::String(_) => format!("{} {value}", kind(value)),
            _ => kind(value).to_owned(),
        };
        self.errors
            .push(path, format!("expected {expected}, found {found}"));
        None
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing (null)",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "the number",
        Value::String(_) => "the string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Whether `typed` looks like a misspelling of `known`: equal ignoring case, or one edit apart.
fn similar(typed: &str, known: &str) -> bool {
    let (a, b): (Vec<char>, Vec<char>) = (
        typed.to_lowercase().chars().collect(),
        known.to_lowercase().chars().collect(),
    );
    let (short, long) = if a.len() <= b.len() {
        (&a, &b)
    } else {
        (&b, &a)
    };
    match long.len() - short.len() {
        0 => short.iter().zip(long).filter(|(x, y)| x != y).count() <= 1,
        1 => (0..long.len()).any(|skip| {
            long.iter()
                .enumerate()
                .filter(|(i, _)| *i != skip)
                .map(|(_, c)| c)
                .eq(short.iter())
        }),
        _ => false,
    }
}
