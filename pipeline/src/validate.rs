//! Semantic rules over a [`Pipeline`]: names, structure, artifact flow and providers.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use crate::catalog::Catalog;
use crate::diag::{Diagnostics, Lines, Path, Report};
use crate::model::{Action, ActionTypeId, Category, Pipeline};

mod git_triggers;

/// Checks every rule and reports every violation, in document order.
pub fn validate(pipeline: &Pipeline, catalog: &Catalog) -> Result<(), Diagnostics> {
    let mut report = Report::default();
    check(pipeline, catalog, &mut report);
    report.into_result(&Path::default(), &Lines::default())
}

pub(crate) fn check(pipeline: &Pipeline, catalog: &Catalog, report: &mut Report) {
    let mut checker = Checker {
        pipeline,
        catalog,
        report,
        producers: HashMap::new(),
        namespaces: HashMap::new(),
    };
    checker.pipeline();
}

/// What a name may look like.
struct NameRule {
    max: usize,
    /// Allowed characters besides ASCII letters and digits.
    extra: &'static str,
}

const NAME: NameRule = NameRule {
    max: 100,
    extra: ".@-_",
};
const ARTIFACT: NameRule = NameRule {
    max: 100,
    extra: "_-",
};
const NAMESPACE: NameRule = NameRule {
    max: 100,
    extra: "@-_",
};
const VARIABLE: NameRule = NameRule {
    max: 128,
    extra: "@-_",
};

const MAX_STAGES: usize = 50;
const MAX_ACTIONS: usize = 50;
const MAX_VARIABLES: usize = 50;
const RESERVED_NAMESPACES: &[&str] = &["codepipeline", "variables"];

fn check_name(report: &mut Report, path: &Path, value: &str, rule: &NameRule) {
    let length = value.chars().count();
    let problem = if value.is_empty() {
        "must not be empty".to_owned()
    } else if length > rule.max {
        format!("is {length} characters long")
    } else if let Some(c) = value
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || rule.extra.contains(c)))
    {
        format!("{value:?} contains {c:?}, which is not allowed")
    } else {
        return;
    };
    let extra: Vec<String> = rule.extra.chars().map(String::from).collect();
    let allowed = format!(
        "use 1 to {} characters from A-Z a-z 0-9 {}",
        rule.max,
        extra.join(" ")
    );
    report.push(path, format!("{problem}; {allowed}"));
}

fn check_length(report: &mut Report, path: &Path, value: &str, max: usize) {
    let length = value.chars().count();
    if length > max {
        report.push(
            path,
            format!("is {length} characters long; at most {max} are allowed"),
        );
    }
}

/// Position of an action: (stage index, action index).
type At = (usize, usize);

struct Checker<'a> {
    pipeline: &'a Pipeline,
    catalog: &'a Catalog,
    report: &'a mut Report,
    /// First action producing each output artifact.
    producers: HashMap<&'a str, At>,
    /// First action using each namespace.
    namespaces: HashMap<&'a str, At>,
}

impl<'a> Checker<'a> {
    fn pipeline(&mut self) {
        let root = Path::default();
        check_name(self.report, &root.key("name"), &self.pipeline.name, &NAME);
        self.variables(&root.key("variables"));
        self.outputs(&root.key("stages"));
        self.stages(&root.key("stages"));
        crate::triggers::check(self.pipeline, self.report);
        crate::conditions::check(self.pipeline, self.report);
        git_triggers::check(self.pipeline, self.report);
    }

    fn variables(&mut self, path: &Path) {
        let variables = &self.pipeline.variables;
        if variables.len() > MAX_VARIABLES {
            let found = variables.len();
            self.report.push(
                path,
                format!("a pipeline may have at most {MAX_VARIABLES} variables, found {found}"),
            );
        }
        let mut seen = HashSet::new();
        for (i, variable) in variables.iter().enumerate() {
            let path = path.index(i);
            check_name(self.report, &path.key("name"), &variable.name, &VARIABLE);
            if !seen.insert(variable.name.as_str()) {
                let message = format!(
                    "duplicate variable name {:?}; variable names must be unique",
                    variable.name
                );
                self.report.push(&path.key("name"), message);
            }
            if let Some(value) = &variable.default_value {
                check_length(self.report, &path.key("defaultValue"), value, 1000);
            }
            if let Some(description) = &variable.description {
                check_length(self.report, &path.key("description"), description, 200);
            }
        }
    }

    /// Checks output artifact names, and records which action first produces each.
    fn outputs(&mut self, path: &Path) {
        let pipeline = self.pipeline;
        for (s, stage) in pipeline.stages.iter().enumerate() {
            for (a, action) in stage.actions.iter().enumerate() {
                let path = path.index(s).key("actions").index(a).key("outputArtifacts");
                for (k, name) in action.output_artifacts.iter().enumerate() {
                    let path = path.index(k);
                    check_name(self.report, &path, name, &ARTIFACT);
                    match self.producers.entry(name) {
                        Entry::Vacant(entry) => {
                            entry.insert((s, a));
                        }
                        Entry::Occupied(entry) if *entry.get() == (s, a) => {
                            self.report
                                .push(&path, format!("{name:?} is listed twice; remove one"));
                        }
                        Entry::Occupied(entry) => {
                            let first_at = *entry.get();
                            let first = self.who(first_at, s);
                            let message = format!(
                                "{name:?} is already produced by {first}; output artifact names must be unique in the pipeline"
                            );
                            self.report.push(&path, message);
                        }
                    }
                }
            }
        }
    }

    fn stages(&mut self, path: &Path) {
        let stages = &self.pipeline.stages;
        let count = stages.len();
        if count < 2 {
            self.report.push(
                path,
                format!("a pipeline needs at least 2 stages, found {count}"),
            );
        } else if count > MAX_STAGES {
            self.report.push(
                path,
                format!("a pipeline may have at most {MAX_STAGES} stages, found {count}"),
            );
        }
        let mut names = HashSet::new();
        for (s, stage) in stages.iter().enumerate() {
            let path = path.index(s);
            check_name(self.report, &path.key("name"), &stage.name, &NAME);
            if !names.insert(stage.name.as_str()) {
                let message = format!(
                    "duplicate stage name {:?}, already used by an earlier stage; stage names must be unique",
                    stage.name
                );
                self.report.push(&path.key("name"), message);
            }
            let count = stage.actions.len();
            if count == 0 {
                self.report
                    .push(&path.key("actions"), "a stage needs at least 1 action");
            } else if count > MAX_ACTIONS {
                let message =
                    format!("a stage may have at most {MAX_ACTIONS} actions, found {count}");
                self.report.push(&path.key("actions"), message);
            }
            let mut action_names = HashSet::new();
            for (a, action) in stage.actions.iter().enumerate() {
                let path = path.key("actions").index(a);
                if !action_names.insert(action.name.as_str()) {
                    let message = format!(
                        "duplicate action name {:?}, already used by an earlier action in this stage; action names must be unique within a stage",
                        action.name
                    );
                    self.report.push(&path.key("name"), message);
                }
                self.action(&path, (s, a), action);
            }
        }
    }

    fn action(&mut self, path: &Path, at: At, action: &'a Action) {
        check_name(self.report, &path.key("name"), &action.name, &NAME);
        self.placement(
            &path.key("actionTypeId").key("category"),
            at,
            action.action_type_id.category,
        );
        if !(1..=999).contains(&action.run_order) {
            let message = format!("must be from 1 to 999, found {}", action.run_order);
            self.report.push(&path.key("runOrder"), message);
        }
        for (key, value) in &action.configuration {
            let path = path.key("configuration").key(key);
            let length = key.chars().count();
            if !(1..=50).contains(&length) {
                let message = format!(
                    "configuration keys must have 1 to 50 characters, this one has {length}"
                );
                self.report.push(&path, message);
            }
            let length = value.chars().count();
            if length > 1000 {
                let message = format!(
                    "value is {length} characters long; at most 1000 are allowed (move long scripts into a file in the source)"
                );
                self.report.push(&path, message);
            }
        }
        for (k, name) in action.input_artifacts.iter().enumerate() {
            let path = path.key("inputArtifacts").index(k);
            check_name(self.report, &path, name, &ARTIFACT);
            self.input(&path, at, name);
        }
        if let Some(namespace) = &action.namespace {
            self.namespace(&path.key("namespace"), at, namespace);
        }
        if let Some(timeout) = action.timeout_in_minutes
            && !(1..=86400).contains(&timeout)
        {
            let message = format!("must be from 1 to 86400 minutes, found {timeout}");
            self.report.push(&path.key("timeoutInMinutes"), message);
        }
        self.provider(path, action);
    }

    /// Source actions only in the first stage, and only Source actions there.
    fn placement(&mut self, path: &Path, (s, _): At, category: Category) {
        if s == 0 && category != Category::Source {
            let message = format!(
                "the first stage may contain only Source actions, found {category}; move this action to a later stage"
            );
            self.report.push(path, message);
        } else if s > 0 && category == Category::Source {
            self.report.push(
                path,
                "Source actions are allowed only in the first stage; move this action there",
            );
        }
    }

    /// The input must come from an action guaranteed to have finished before this one starts.
    fn input(&mut self, path: &Path, (s, a): At, name: &str) {
        let not_earlier = format!("{name:?} is not produced by an earlier action");
        let Some(&(ps, pa)) = self.producers.get(name) else {
            self.report.push(path, not_earlier);
            return;
        };
        let run_order = self.action_at((s, a)).run_order;
        let producer_order = self.action_at((ps, pa)).run_order;
        let producer = self.who((ps, pa), s);
        let why = if ps < s || (ps == s && producer_order < run_order) {
            return;
        } else if (ps, pa) == (s, a) {
            "this action produces it itself".to_owned()
        } else if ps > s {
            format!("{producer} produces it in a later stage; move one of the two actions")
        } else if producer_order == run_order {
            format!(
                "{producer} produces it with the same runOrder ({run_order}), so the two run in parallel; give this action a runOrder above {run_order}"
            )
        } else {
            format!(
                "{producer} produces it with a later runOrder ({producer_order}, this action has {run_order}); give this action a runOrder above {producer_order}"
            )
        };
        self.report.push(path, format!("{not_earlier}: {why}"));
    }

    fn namespace(&mut self, path: &Path, at: At, namespace: &'a str) {
        check_name(self.report, path, namespace, &NAMESPACE);
        if RESERVED_NAMESPACES.contains(&namespace) {
            self.report.push(
                path,
                format!("{namespace:?} is reserved; choose another namespace"),
            );
        }
        match self.namespaces.entry(namespace) {
            Entry::Vacant(entry) => {
                entry.insert(at);
            }
            Entry::Occupied(entry) => {
                let first_at = *entry.get();
                let first = self.who(first_at, at.0);
                let message = format!(
                    "namespace {namespace:?} is already used by {first}; namespaces must be unique"
                );
                self.report.push(path, message);
            }
        }
    }

    /// The provider must be in the catalog, and the artifact counts within its limits.
    fn provider(&mut self, path: &Path, action: &Action) {
        let t = &action.action_type_id;
        let Some(entry) = self.catalog.find(t) else {
            let versions = self.catalog.versions_of(t);
            let entries: Vec<String> = self
                .catalog
                .entries()
                .iter()
                .map(ToString::to_string)
                .collect();
            let available = if !versions.is_empty() {
                format!("available versions: {}", versions.join(", "))
            } else if entries.is_empty() {
                "available: none".to_owned()
            } else {
                format!("available: {}", entries.join(", "))
            };
            let ActionTypeId {
                category,
                owner,
                provider,
                version,
            } = t;
            let message = format!(
                "unknown provider {category}/{owner}/{provider} version {version}; {available}"
            );
            self.report.push(&path.key("actionTypeId"), message);
            return;
        };
        let counts = [
            (
                "inputArtifacts",
                "input",
                action.input_artifacts.len(),
                entry.min_inputs,
                entry.max_inputs,
            ),
            (
                "outputArtifacts",
                "output",
                action.output_artifacts.len(),
                entry.min_outputs,
                entry.max_outputs,
            ),
        ];
        for (field, what, found, min, max) in counts {
            let allowed = match (min, max) {
                _ if (min..=max).contains(&found) => continue,
                (0, 0) => format!("no {what} artifacts"),
                (1, 1) => format!("exactly 1 {what} artifact"),
                _ if min == max => format!("exactly {min} {what} artifacts"),
                _ => format!("{min} to {max} {what} artifacts"),
            };
            self.report.push(
                &path.key(field),
                format!("{entry} takes {allowed}, found {found}"),
            );
        }
        if let Some(plugin) = &entry.plugin {
            self.plugin_config(path, action, plugin);
        }
    }

    /// The configuration must fit the plugin's declared keys, and every secret it names
    /// must be granted to the plugin.
    fn plugin_config(&mut self, path: &Path, action: &Action, plugin: &crate::PluginEntry) {
        let manifest_view = crate::manifest::Manifest {
            id: plugin.id.clone(),
            config: plugin.config.clone(),
            ..crate::manifest::Manifest::placeholder()
        };
        if let Err(problems) = manifest_view.check_config(&action.configuration) {
            for (key, message) in problems {
                self.report
                    .push(&path.key("configuration").key(&key), message);
            }
        }
        for field in plugin.config.iter().filter(|f| f.secret) {
            let Some(name) = action.configuration.get(&field.name).map(|v| v.trim()) else {
                continue;
            };
            if name.is_empty() || name.contains("#{") {
                continue;
            }
            let granted = plugin.granted_secrets.iter().any(|g| g == "*" || g == name);
            if !granted {
                self.report.push(
                    &path.key("configuration").key(&field.name),
                    format!(
                        "plugin {} is not granted secret:{name}; an operator grants it with \
                         `sluice plugin grant {} secret:{name}`",
                        plugin.id, plugin.id
                    ),
                );
            }
        }
    }

    fn action_at(&self, (s, a): At) -> &'a Action {
        &self.pipeline.stages[s].actions[a]
    }

    /// Names an action for a message read at stage `from`.
    fn who(&self, (s, a): At, from: usize) -> String {
        let action = &self.action_at((s, a)).name;
        if s == from {
            format!("action {action:?} in this stage")
        } else {
            format!(
                "action {action:?} in stage {:?}",
                self.pipeline.stages[s].name
            )
        }
    }
}
