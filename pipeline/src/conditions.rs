//! Stage conditions (`beforeEntry`, `onSuccess`, `onFailure`): checking their rules when
//! a pipeline is validated, and evaluating the rules the controller decides itself.
//!
//! Three rule providers exist: `VariableCheck` compares a variable with a value,
//! `DeploymentWindow` passes while the current minute is one a cron expression selects,
//! and `Commands` runs shell commands on an agent (the controller dispatches it like an
//! action and the rule passes if they exit 0).

use chrono::{DateTime, Duration, Timelike, Utc};

use crate::diag::{Path, Report};
use crate::model::{Condition, ConditionResult, ExecutionMode, Pipeline, Rule};
use crate::triggers::{next_fire, parse_cron, parse_time_zone};

/// The rule providers Sluice evaluates.
pub const PROVIDERS: [&str; 3] = ["VariableCheck", "DeploymentWindow", "Commands"];
const MAX_COMMANDS: usize = 50;
const MAX_COMMAND_LENGTH: usize = 1000;
/// The operators of a `VariableCheck` rule.
pub const OPERATORS: [&str; 5] = ["EQ", "NE", "CONTAINS", "GREATER_THAN", "LESS_THAN"];
const MAX_RULES: usize = 5;

/// The `#{namespace.name}` reference in `text`, if `text` is exactly one reference.
pub fn reference(text: &str) -> Option<(&str, &str)> {
    let inner = text.trim().strip_prefix("#{")?.strip_suffix('}')?;
    let (namespace, name) = inner.split_once('.')?;
    let valid = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "@-_".contains(c))
    };
    (valid(namespace) && valid(name)).then_some((namespace, name))
}

/// Evaluates one rule. `Ok` says why it passed, `Err` why it did not. `resolve` reads
/// `#{namespace.name}` references.
pub fn evaluate(
    rule: &Rule,
    resolve: &dyn Fn(&str, &str) -> Result<String, String>,
    now: DateTime<Utc>,
) -> Result<String, String> {
    let config = |key: &str| rule.configuration.get(key).map(String::as_str);
    match rule.rule_type_id.provider.as_str() {
        "VariableCheck" => {
            let variable = config("Variable").unwrap_or_default();
            let expected = config("Value").unwrap_or_default();
            let operator = config("Operator").unwrap_or_default();
            let (namespace, name) =
                reference(variable).ok_or_else(|| format!("{variable:?} is not a #{{ns.name}}"))?;
            let actual = resolve(namespace, name)?;
            let passed = match operator {
                "EQ" => actual == expected,
                "NE" => actual != expected,
                "CONTAINS" => actual.contains(expected),
                "GREATER_THAN" | "LESS_THAN" => {
                    let number = |s: &str| s.trim().parse::<f64>().ok();
                    let (Some(a), Some(e)) = (number(&actual), number(expected)) else {
                        return Err(format!(
                            "{variable} is {actual:?}, which is not a number to compare with \
                             {operator} {expected}"
                        ));
                    };
                    if operator == "GREATER_THAN" {
                        a > e
                    } else {
                        a < e
                    }
                }
                other => return Err(format!("unknown operator {other:?}")),
            };
            if passed {
                Ok(format!(
                    "{variable} is {actual:?} ({operator} {expected:?})"
                ))
            } else {
                Err(format!(
                    "{variable} is {actual:?}, so {operator} {expected:?} does not hold"
                ))
            }
        }
        "DeploymentWindow" => {
            let expression = config("Cron").unwrap_or_default();
            let zone_name = config("TimeZone").unwrap_or("UTC");
            let cron = parse_cron(expression)?;
            let zone = parse_time_zone(zone_name)?;
            // The window is every minute the expression selects.
            let minute = now
                .with_second(0)
                .and_then(|t| t.with_nanosecond(0))
                .unwrap_or(now);
            let fire = next_fire(&cron, zone, minute - Duration::seconds(1));
            let local = now.with_timezone(&zone).format("%Y-%m-%d %H:%M %Z");
            match fire {
                Some(at) if at < minute + Duration::minutes(1) => Ok(format!(
                    "{local} is inside the deployment window {expression:?} ({zone_name})"
                )),
                Some(at) => Err(format!(
                    "{local} is outside the deployment window {expression:?} ({zone_name}); it \
                     next opens at {}",
                    at.with_timezone(&zone).format("%Y-%m-%d %H:%M %Z")
                )),
                None => Err(format!(
                    "{local} is outside the deployment window {expression:?} ({zone_name}), \
                     which never opens"
                )),
            }
        }
        other => Err(format!("unknown rule provider {other:?}")),
    }
}

/// Where a condition sits in a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Checked before the stage starts.
    BeforeEntry,
    /// Checked once the stage's actions all succeeded.
    OnSuccess,
    /// Checked when the stage failed.
    OnFailure,
}

impl Kind {
    /// The name as written in definitions and shown in history.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::BeforeEntry => "beforeEntry",
            Kind::OnSuccess => "onSuccess",
            Kind::OnFailure => "onFailure",
        }
    }

    /// Parses [`Kind::as_str`].
    pub fn parse(text: &str) -> Option<Kind> {
        [Kind::BeforeEntry, Kind::OnSuccess, Kind::OnFailure]
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(text))
    }
}

/// Whether a rule runs as a job on an agent (rather than in the controller).
pub fn runs_on_agent(rule: &Rule) -> bool {
    rule.rule_type_id.provider == "Commands"
}

/// Checks every stage's `beforeEntry`, `onSuccess` and `onFailure`.
pub(crate) fn check(pipeline: &Pipeline, report: &mut Report) {
    let root = Path::default().key("stages");
    for (s, stage) in pipeline.stages.iter().enumerate() {
        let stage_path = root.index(s);
        let mut rollback_at = None;
        if let Some(before_entry) = &stage.before_entry {
            let path = stage_path.key("beforeEntry");
            if s == 0 {
                report.push(
                    &path,
                    "the first stage has no beforeEntry: executions start in it",
                );
            }
            check_conditions(
                pipeline,
                s,
                Kind::BeforeEntry,
                &before_entry.conditions,
                &path,
                report,
            );
        }
        if let Some(on_success) = &stage.on_success {
            let path = stage_path.key("onSuccess");
            check_conditions(
                pipeline,
                s,
                Kind::OnSuccess,
                &on_success.conditions,
                &path,
                report,
            );
            if on_success
                .conditions
                .iter()
                .any(|c| c.result == ConditionResult::Rollback)
            {
                rollback_at = Some(path.key("conditions").index(0).key("result"));
            }
        }
        if let Some(on_failure) = &stage.on_failure {
            let path = stage_path.key("onFailure");
            match on_failure.result {
                ConditionResult::Skip => report.push(
                    &path.key("result"),
                    "a failed stage cannot be skipped; onFailure's result is RETRY, ROLLBACK or \
                     FAIL (SKIP is for beforeEntry)",
                ),
                ConditionResult::Rollback => rollback_at = Some(path.key("result")),
                ConditionResult::Retry | ConditionResult::Fail => {}
            }
            if on_failure.retry_configuration.is_some()
                && on_failure.result != ConditionResult::Retry
            {
                report.push(
                    &path.key("retryConfiguration"),
                    "retryConfiguration goes with result RETRY",
                );
            }
            if !on_failure.conditions.is_empty() {
                match on_failure.result {
                    ConditionResult::Retry => report.push(
                        &path.key("conditions"),
                        "an automatic retry cannot be combined with onFailure conditions, as in \
                         CodePipeline; remove the conditions or use result ROLLBACK",
                    ),
                    ConditionResult::Fail => report.push(
                        &path.key("conditions"),
                        "onFailure conditions decide whether the stage rolls back; they need \
                         result ROLLBACK",
                    ),
                    _ => check_conditions(
                        pipeline,
                        s,
                        Kind::OnFailure,
                        &on_failure.conditions,
                        &path,
                        report,
                    ),
                }
            }
        }
        if let Some(path) = rollback_at {
            if pipeline.execution_mode == ExecutionMode::Parallel {
                report.push(
                    &path,
                    "PARALLEL executions cannot roll back a stage, as in CodePipeline; use \
                     SUPERSEDED or QUEUED, or result FAIL",
                );
            } else if s == 0 {
                report.push(
                    &path,
                    "the first stage cannot be rolled back: it has no earlier stage whose \
                     artifacts a rollback could reuse",
                );
            }
        }
    }
}

fn check_conditions(
    pipeline: &Pipeline,
    stage: usize,
    kind: Kind,
    conditions: &[Condition],
    path: &Path,
    report: &mut Report,
) {
    if conditions.len() != 1 {
        report.push(
            &path.key("conditions"),
            format!(
                "{} needs exactly one condition, found {}",
                kind.as_str(),
                conditions.len()
            ),
        );
    }
    let allowed: &[ConditionResult] = match kind {
        Kind::BeforeEntry => &[ConditionResult::Fail, ConditionResult::Skip],
        Kind::OnSuccess | Kind::OnFailure => &[ConditionResult::Fail, ConditionResult::Rollback],
    };
    for (c, condition) in conditions.iter().enumerate() {
        let path = path.key("conditions").index(c);
        if !allowed.contains(&condition.result) {
            let names: Vec<&str> = allowed.iter().map(|r| r.as_str()).collect();
            report.push(
                &path.key("result"),
                format!(
                    "a {} condition's result is {}, not {}",
                    kind.as_str(),
                    names.join(" or "),
                    condition.result.as_str()
                ),
            );
        }
        let count = condition.rules.len();
        if !(1..=MAX_RULES).contains(&count) {
            report.push(
                &path.key("rules"),
                format!("a condition needs 1 to {MAX_RULES} rules, found {count}"),
            );
        }
        for (r, rule) in condition.rules.iter().enumerate() {
            let path = path.key("rules").index(r);
            if condition.rules[..r].iter().any(|o| o.name == rule.name) {
                report.push(
                    &path.key("name"),
                    format!("duplicate rule name {:?} in this condition", rule.name),
                );
            }
            check_rule(pipeline, stage, kind, rule, &path, report);
            if condition.result == ConditionResult::Skip
                && rule.rule_type_id.provider == "DeploymentWindow"
            {
                report.push(
                    &path.key("ruleTypeId").key("provider"),
                    "a condition with result SKIP may only use VariableCheck and Commands rules, \
                     as in CodePipeline",
                );
            }
        }
    }
}

fn check_rule(
    pipeline: &Pipeline,
    stage: usize,
    kind: Kind,
    rule: &Rule,
    path: &Path,
    report: &mut Report,
) {
    // What a rule may refer to: earlier stages, and (after the actions ran) its own.
    let visible = match kind {
        Kind::BeforeEntry => &pipeline.stages[..stage],
        Kind::OnSuccess | Kind::OnFailure => &pipeline.stages[..=stage],
    };
    let name = &rule.name;
    if name.is_empty() || name.chars().count() > 100 {
        report.push(&path.key("name"), "use 1 to 100 characters");
    }
    let id = &rule.rule_type_id;
    let id_path = path.key("ruleTypeId");
    if id.category != "Rule" {
        report.push(
            &id_path.key("category"),
            format!("{:?} is not a rule category; write Rule", id.category),
        );
    }
    if id.owner != "AWS" && id.owner != "Sluice" {
        report.push(
            &id_path.key("owner"),
            format!("unknown owner {:?}; expected AWS or Sluice", id.owner),
        );
    }
    if id.version != "1" {
        report.push(
            &id_path.key("version"),
            format!("unknown version {:?}; expected \"1\"", id.version),
        );
    }
    let config = path.key("configuration");
    let allowed: &[&str] = match id.provider.as_str() {
        "VariableCheck" => &["Variable", "Value", "Operator"],
        "DeploymentWindow" => &["Cron", "TimeZone"],
        "Commands" => &[],
        other => {
            report.push(
                &id_path.key("provider"),
                format!(
                    "unsupported rule provider {other:?}; Sluice supports {}",
                    PROVIDERS.join(", ")
                ),
            );
            return;
        }
    };
    if id.provider == "Commands" {
        check_commands_rule(visible, rule, path, report);
    } else {
        let agent_only = [
            ("commands", !rule.commands.is_empty()),
            ("inputArtifacts", !rule.input_artifacts.is_empty()),
            ("timeoutInMinutes", rule.timeout_in_minutes.is_some()),
            ("agent", !rule.agent.is_empty()),
        ];
        for (field, set) in agent_only {
            if set {
                report.push(
                    &path.key(field),
                    format!(
                        "only Commands rules run on agents; {} rules have no {field}",
                        id.provider
                    ),
                );
            }
        }
    }
    for key in rule.configuration.keys() {
        if !allowed.contains(&key.as_str()) {
            let expected = if allowed.is_empty() {
                "it takes no configuration (write the shell lines in `commands`)".to_owned()
            } else {
                format!("expected one of: {}", allowed.join(", "))
            };
            report.push(
                &config.key(key),
                format!("unknown {} setting; {expected}", id.provider),
            );
        }
    }
    if id.provider == "Commands" {
        return;
    }
    let get = |key: &str| rule.configuration.get(key);
    let mut required = |key: &str| {
        let value = get(key);
        if value.is_none() {
            report.push(&config.key(key), "missing required setting");
        }
        value
    };
    if id.provider == "DeploymentWindow" {
        if let Some(cron) = required("Cron")
            && let Err(e) = parse_cron(cron)
        {
            report.push(&config.key("Cron"), e);
        }
        if let Some(zone) = get("TimeZone")
            && let Err(e) = parse_time_zone(zone)
        {
            report.push(&config.key("TimeZone"), e);
        }
        return;
    }
    let variable = required("Variable");
    let value = required("Value");
    let operator = required("Operator");
    if let Some(operator) = operator
        && !OPERATORS.contains(&operator.as_str())
    {
        report.push(
            &config.key("Operator"),
            format!(
                "unknown operator {operator:?}; expected one of: {}",
                OPERATORS.join(", ")
            ),
        );
    }
    if let (Some(operator), Some(value)) = (operator, value)
        && matches!(operator.as_str(), "GREATER_THAN" | "LESS_THAN")
        && value.trim().parse::<f64>().is_err()
    {
        report.push(
            &config.key("Value"),
            format!("{operator} compares numbers, and {value:?} is not one"),
        );
    }
    let Some(variable) = variable else {
        return;
    };
    let Some((namespace, name)) = reference(variable) else {
        report.push(
            &config.key("Variable"),
            format!("{variable:?} is not a variable reference; write #{{namespace.name}}"),
        );
        return;
    };
    let known = match namespace {
        "codepipeline" => ["PipelineExecutionId", "PipelineName"].contains(&name),
        "variables" => pipeline.variables.iter().any(|v| v.name == name),
        _ => visible
            .iter()
            .flat_map(|s| &s.actions)
            .any(|a| a.namespace.as_deref() == Some(namespace)),
    };
    if !known {
        let why = match namespace {
            "codepipeline" => "codepipeline has PipelineExecutionId and PipelineName".to_owned(),
            "variables" => format!("the pipeline declares no variable {name:?}"),
            _ if kind == Kind::BeforeEntry => {
                format!("no action in an earlier stage has namespace {namespace:?}")
            }
            _ => format!("no action in this or an earlier stage has namespace {namespace:?}"),
        };
        report.push(
            &config.key("Variable"),
            format!("{variable} cannot be resolved: {why}"),
        );
    }
}

/// A `Commands` rule: 1 to 50 lines, inputs that exist by the time it runs.
fn check_commands_rule(visible: &[crate::Stage], rule: &Rule, path: &Path, report: &mut Report) {
    let count = rule.commands.len();
    if !(1..=MAX_COMMANDS).contains(&count) {
        report.push(
            &path.key("commands"),
            format!("a Commands rule needs 1 to {MAX_COMMANDS} commands, found {count}"),
        );
    }
    for (i, command) in rule.commands.iter().enumerate() {
        let length = command.chars().count();
        if command.trim().is_empty() || length > MAX_COMMAND_LENGTH {
            report.push(
                &path.key("commands").index(i),
                format!("a command is 1 to {MAX_COMMAND_LENGTH} characters, this one {length}"),
            );
        }
    }
    for (i, name) in rule.input_artifacts.iter().enumerate() {
        let produced = visible
            .iter()
            .flat_map(|s| &s.actions)
            .any(|a| a.output_artifacts.contains(name));
        if !produced {
            report.push(
                &path.key("inputArtifacts").index(i),
                format!("{name:?} is not produced by an action that runs before this rule"),
            );
        }
    }
    if let Some(minutes) = rule.timeout_in_minutes
        && !(1..=86_400).contains(&minutes)
    {
        report.push(
            &path.key("timeoutInMinutes"),
            format!("use 1 to 86400 minutes, not {minutes}"),
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::Catalog;
    use std::collections::BTreeMap;

    const BASE: &str = "name: p
variables: [{name: Env}]
stages:
  - name: S
    actions:
      - {name: A, actionTypeId: {category: Source, provider: git}, outputArtifacts: [Out]}
  - name: B
    beforeEntry:
      conditions:
";

    fn errors(conditions: &str) -> Vec<String> {
        let text = format!(
            "{BASE}{conditions}    actions:\n      - {{name: C, actionTypeId: {{category: Build, provider: commands}}, configuration: {{Commands: x}}, inputArtifacts: [Out]}}\n"
        );
        match crate::parse_and_validate(&text, None, &Catalog::builtin()) {
            Ok(_) => Vec::new(),
            Err(d) => d.0.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn valid_conditions_parse_and_bad_ones_are_reported_with_paths() {
        let ok = "        - result: SKIP\n          rules:\n            - {name: R, ruleTypeId: {category: Rule, provider: VariableCheck}, configuration: {Variable: '#{variables.Env}', Value: '3', Operator: GREATER_THAN}}\n";
        assert_eq!(errors(ok), Vec::<String>::new());
        let bad = "        - result: SKIP\n          rules:\n            - {name: R, ruleTypeId: {category: Rule, provider: DeploymentWindow}, configuration: {Cron: '0 3 * *', TimeZone: Mars/Base}}\n            - {name: V, ruleTypeId: {category: Rule, provider: VariableCheck}, configuration: {Variable: '#{Nope.X}', Value: a, Operator: LIKE}}\n            - {name: L, ruleTypeId: {category: Rule, provider: LambdaInvoke}}\n";
        let found = errors(bad);
        let expect = [
            "stages[1].beforeEntry.conditions[0].rules[0].ruleTypeId.provider: a condition with result SKIP",
            "stages[1].beforeEntry.conditions[0].rules[0].configuration.Cron: \"0 3 * *\" has 4 fields",
            "stages[1].beforeEntry.conditions[0].rules[0].configuration.TimeZone: unknown time zone",
            "stages[1].beforeEntry.conditions[0].rules[1].configuration.Variable: #{Nope.X} cannot be resolved",
            "stages[1].beforeEntry.conditions[0].rules[1].configuration.Operator: unknown operator \"LIKE\"",
            "stages[1].beforeEntry.conditions[0].rules[2].ruleTypeId.provider: unsupported rule provider \"LambdaInvoke\"",
        ];
        for e in expect {
            assert!(found.iter().any(|f| f.starts_with(e)), "{e}\nin {found:#?}");
        }
        let rollback = errors("        - {result: ROLLBACK, rules: []}\n");
        assert!(
            rollback[0].starts_with("stages[1].beforeEntry.conditions[0].result: a beforeEntry"),
            "{rollback:?}"
        );
    }

    fn stage_errors(mode: &str, stage: &str) -> Vec<String> {
        let text = format!(
            "name: p\nexecutionMode: {mode}\nstages:\n  - name: S\n    actions:\n      - {{name: A, actionTypeId: {{category: Source, provider: git}}, outputArtifacts: [Out]}}\n  - name: D\n    actions:\n      - {{name: C, actionTypeId: {{category: Build, provider: commands}}, configuration: {{Commands: x}}, inputArtifacts: [Out], outputArtifacts: [Built], namespace: Build}}\n{stage}"
        );
        match crate::parse_and_validate(&text, None, &Catalog::builtin()) {
            Ok(_) => Vec::new(),
            Err(d) => d.0.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn on_success_and_on_failure_are_checked_with_paths() {
        let ok = "    onSuccess:\n      conditions:\n        - result: ROLLBACK\n          rules:\n            - {name: Smoke, ruleTypeId: {category: Rule, provider: Commands}, commands: ['test -f x'], inputArtifacts: [Built], agent: {os: linux}}\n            - {name: V, ruleTypeId: {category: Rule, provider: VariableCheck}, configuration: {Variable: '#{Build.X}', Value: a, Operator: EQ}}\n    onFailure:\n      result: RETRY\n      retryConfiguration: {retryMode: ALL_ACTIONS}\n";
        assert_eq!(stage_errors("SUPERSEDED", ok), Vec::<String>::new());
        let rollback = "    onFailure:\n      result: ROLLBACK\n      conditions:\n        - rules:\n            - {name: W, ruleTypeId: {category: Rule, provider: DeploymentWindow}, configuration: {Cron: '* * * * *'}}\n";
        assert_eq!(stage_errors("QUEUED", rollback), Vec::<String>::new());
        let parallel = stage_errors("PARALLEL", rollback);
        assert!(
            parallel[0]
                .starts_with("stages[1].onFailure.result: PARALLEL executions cannot roll back"),
            "{parallel:?}"
        );
        let bad = "    onSuccess:\n      conditions:\n        - result: SKIP\n          rules:\n            - {name: R, ruleTypeId: {category: Rule, provider: Commands}, commands: [], inputArtifacts: [Nope], configuration: {Cmd: x}}\n            - {name: V, ruleTypeId: {category: Rule, provider: VariableCheck}, commands: [ls], configuration: {Variable: '#{variables.X}', Value: a, Operator: EQ}}\n    onFailure:\n      result: RETRY\n      conditions:\n        - rules:\n            - {name: W, ruleTypeId: {category: Rule, provider: DeploymentWindow}, configuration: {Cron: '* * * * *'}}\n";
        let found = stage_errors("SUPERSEDED", bad);
        let expect = [
            "stages[1].onSuccess.conditions[0].result: a onSuccess condition's result is FAIL or ROLLBACK, not SKIP",
            "stages[1].onSuccess.conditions[0].rules[0].commands: a Commands rule needs 1 to 50 commands, found 0",
            "stages[1].onSuccess.conditions[0].rules[0].inputArtifacts[0]: \"Nope\" is not produced",
            "stages[1].onSuccess.conditions[0].rules[0].configuration.Cmd: unknown Commands setting; it takes no configuration",
            "stages[1].onSuccess.conditions[0].rules[1].commands: only Commands rules run on agents",
            "stages[1].onSuccess.conditions[0].rules[1].configuration.Variable: #{variables.X} cannot be resolved",
            "stages[1].onFailure.conditions: an automatic retry cannot be combined with onFailure conditions",
        ];
        for e in expect {
            assert!(found.iter().any(|f| f.starts_with(e)), "{e}\nin {found:#?}");
        }
        let skip = stage_errors(
            "SUPERSEDED",
            "    onFailure: {result: SKIP, retryConfiguration: {retryMode: FAILED_ACTIONS}}\n",
        );
        for e in [
            "stages[1].onFailure.result: a failed stage cannot be skipped",
            "stages[1].onFailure.retryConfiguration: retryConfiguration goes with result RETRY",
        ] {
            assert!(skip.iter().any(|f| f.starts_with(e)), "{e}\nin {skip:#?}");
        }
    }

    fn window(cron: &str, zone: &str, now: &str) -> Result<String, String> {
        let rule = Rule {
            name: "W".into(),
            rule_type_id: crate::RuleTypeId {
                category: "Rule".into(),
                owner: "AWS".into(),
                provider: "DeploymentWindow".into(),
                version: "1".into(),
            },
            configuration: [("Cron", cron), ("TimeZone", zone)]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            commands: Vec::new(),
            input_artifacts: Vec::new(),
            timeout_in_minutes: None,
            agent: BTreeMap::new(),
        };
        let now = DateTime::parse_from_rfc3339(now)
            .unwrap()
            .with_timezone(&Utc);
        evaluate(&rule, &|_, _| Err("none".into()), now)
    }

    #[test]
    fn a_deployment_window_is_the_minutes_its_cron_selects_in_its_zone() {
        // 09:30:45 in Berlin (CEST) is 07:30:45 UTC.
        assert!(window("30 9 * * *", "Europe/Berlin", "2025-06-02T07:30:45Z").is_ok());
        assert!(window("* 9 * * 1-5", "Europe/Berlin", "2025-06-02T07:59:00Z").is_ok());
        let closed = window("30 9 * * *", "UTC", "2025-06-02T07:30:45Z").unwrap_err();
        assert!(
            closed.contains("next opens at 2025-06-02 09:30 UTC"),
            "{closed}"
        );
        assert!(window("0 30 9 * * *", "UTC", "2025-06-02T09:30:59Z").is_ok());
        assert!(window("0 0 30 2 *", "UTC", "2025-06-02T09:30:59Z").is_err());
    }
}
