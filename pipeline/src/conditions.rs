//! Stage conditions (`beforeEntry`): checking their rules when a pipeline is validated,
//! and evaluating them when an execution is about to enter a stage.
//!
//! Two rule providers exist: `VariableCheck` compares a variable with a value, and
//! `DeploymentWindow` passes while the current minute is one a cron expression selects.

use chrono::{DateTime, Duration, Timelike, Utc};

use crate::diag::{Path, Report};
use crate::model::{ConditionResult, Pipeline, Rule};
use crate::triggers::{next_fire, parse_cron, parse_time_zone};

/// The rule providers Sluice evaluates.
pub const PROVIDERS: [&str; 2] = ["VariableCheck", "DeploymentWindow"];
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

/// Checks every stage's `beforeEntry`.
pub(crate) fn check(pipeline: &Pipeline, report: &mut Report) {
    let root = Path::default().key("stages");
    for (s, stage) in pipeline.stages.iter().enumerate() {
        let Some(before_entry) = &stage.before_entry else {
            continue;
        };
        let path = root.index(s).key("beforeEntry");
        if s == 0 {
            report.push(
                &path,
                "the first stage has no beforeEntry: executions start in it",
            );
        }
        if before_entry.conditions.len() != 1 {
            report.push(
                &path.key("conditions"),
                format!(
                    "beforeEntry needs exactly one condition, found {}",
                    before_entry.conditions.len()
                ),
            );
        }
        for (c, condition) in before_entry.conditions.iter().enumerate() {
            let path = path.key("conditions").index(c);
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
                check_rule(pipeline, s, rule, &path, report);
                if condition.result == ConditionResult::Skip
                    && rule.rule_type_id.provider == "DeploymentWindow"
                {
                    report.push(
                        &path.key("ruleTypeId").key("provider"),
                        "a condition with result SKIP may only use VariableCheck rules, as in \
                         CodePipeline",
                    );
                }
            }
        }
    }
}

fn check_rule(pipeline: &Pipeline, stage: usize, rule: &Rule, path: &Path, report: &mut Report) {
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
        other => {
            report.push(
                &id_path.key("provider"),
                format!(
                    "unsupported rule provider {other:?}; Sluice supports {}",
                    PROVIDERS.join(" and ")
                ),
            );
            return;
        }
    };
    for key in rule.configuration.keys() {
        if !allowed.contains(&key.as_str()) {
            report.push(
                &config.key(key),
                format!(
                    "unknown {} setting; expected one of: {}",
                    id.provider,
                    allowed.join(", ")
                ),
            );
        }
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
        _ => pipeline.stages[..stage]
            .iter()
            .flat_map(|s| &s.actions)
            .any(|a| a.namespace.as_deref() == Some(namespace)),
    };
    if !known {
        let why = match namespace {
            "codepipeline" => "codepipeline has PipelineExecutionId and PipelineName".to_owned(),
            "variables" => format!("the pipeline declares no variable {name:?}"),
            _ => format!("no action in an earlier stage has namespace {namespace:?}"),
        };
        report.push(
            &config.key("Variable"),
            format!("{variable} cannot be resolved: {why}"),
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::Catalog;

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
