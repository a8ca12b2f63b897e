//! A [`Pipeline`] in Sluice's YAML form, laid out as the README writes definitions:
//! flow-style action types and artifact lists, block literals for multi-line values.

use std::fmt::Write as _;

use yaml_rust2::Yaml;

use crate::model::{Action, Condition, ExecutionMode, Pipeline, Rule};

/// The pipeline as YAML that [`crate::parse`] reads back to an equal pipeline.
pub fn to_yaml(pipeline: &Pipeline) -> String {
    let mut out = String::new();
    line(&mut out, 0, "name", &scalar(&pipeline.name, false));
    if pipeline.execution_mode != ExecutionMode::default() {
        line(
            &mut out,
            0,
            "executionMode",
            pipeline.execution_mode.as_str(),
        );
    }
    if let Some(kind) = &pipeline.pipeline_type {
        line(&mut out, 0, "pipelineType", &scalar(kind, false));
    }
    if !pipeline.variables.is_empty() {
        out.push_str("variables:\n");
        for variable in &pipeline.variables {
            let _ = writeln!(out, "  - name: {}", scalar(&variable.name, false));
            if let Some(value) = &variable.default_value {
                value_line(&mut out, 4, "defaultValue", value);
            }
            if let Some(description) = &variable.description {
                value_line(&mut out, 4, "description", description);
            }
        }
    }
    out.push_str("stages:\n");
    for stage in &pipeline.stages {
        let _ = writeln!(out, "  - name: {}", scalar(&stage.name, false));
        if stage.actions.is_empty() {
            out.push_str("    actions: []\n");
        } else {
            out.push_str("    actions:\n");
            for action in &stage.actions {
                write_action(&mut out, action);
            }
        }
        for (key, conditions) in [
            ("beforeEntry", &stage.before_entry),
            ("onSuccess", &stage.on_success),
        ] {
            if let Some(conditions) = conditions {
                let _ = writeln!(out, "    {key}:");
                write_conditions(&mut out, &conditions.conditions);
            }
        }
        if let Some(on_failure) = &stage.on_failure {
            out.push_str("    onFailure:\n");
            let _ = writeln!(out, "      result: {}", on_failure.result.as_str());
            if let Some(retry) = &on_failure.retry_configuration {
                let _ = writeln!(
                    out,
                    "      retryConfiguration: {{retryMode: {}}}",
                    retry.retry_mode.as_str()
                );
            }
            if !on_failure.conditions.is_empty() {
                write_conditions(&mut out, &on_failure.conditions);
            }
        }
    }
    out
}

/// `conditions:` of a stage's `beforeEntry`, `onSuccess` or `onFailure` (indented 6).
fn write_conditions(out: &mut String, conditions: &[Condition]) {
    if conditions.is_empty() {
        out.push_str("      conditions: []\n");
        return;
    }
    out.push_str("      conditions:\n");
    for condition in conditions {
        let _ = writeln!(out, "        - result: {}", condition.result.as_str());
        if condition.rules.is_empty() {
            out.push_str("          rules: []\n");
            continue;
        }
        out.push_str("          rules:\n");
        for rule in &condition.rules {
            write_rule(out, rule);
        }
    }
}

fn write_rule(out: &mut String, rule: &Rule) {
    let _ = writeln!(out, "            - name: {}", scalar(&rule.name, false));
    let t = &rule.rule_type_id;
    let _ = writeln!(
        out,
        "              ruleTypeId: {{category: {}, owner: {}, provider: {}, version: {}}}",
        scalar(&t.category, true),
        scalar(&t.owner, true),
        scalar(&t.provider, true),
        scalar(&t.version, true)
    );
    if !rule.configuration.is_empty() {
        out.push_str("              configuration:\n");
        for (key, value) in &rule.configuration {
            value_line(out, 16, key, value);
        }
    }
    if !rule.commands.is_empty() {
        out.push_str("              commands:\n");
        for command in &rule.commands {
            let _ = writeln!(out, "                - {}", scalar(command, false));
        }
    }
    if !rule.input_artifacts.is_empty() {
        let names: Vec<String> = rule
            .input_artifacts
            .iter()
            .map(|n| scalar(n, true))
            .collect();
        let _ = writeln!(out, "              inputArtifacts: [{}]", names.join(", "));
    }
    if let Some(timeout) = rule.timeout_in_minutes {
        let _ = writeln!(out, "              timeoutInMinutes: {timeout}");
    }
    if !rule.agent.is_empty() {
        out.push_str("              agent:\n");
        for (key, value) in &rule.agent {
            value_line(out, 16, key, value);
        }
    }
}

fn write_action(out: &mut String, action: &Action) {
    let _ = writeln!(out, "      - name: {}", scalar(&action.name, false));
    let t = &action.action_type_id;
    let _ = writeln!(
        out,
        "        actionTypeId: {{category: {}, owner: {}, provider: {}, version: {}}}",
        t.category,
        scalar(&t.owner, true),
        scalar(&t.provider, true),
        scalar(&t.version, true)
    );
    if action.run_order != 1 {
        let _ = writeln!(out, "        runOrder: {}", action.run_order);
    }
    if let Some(namespace) = &action.namespace {
        line(out, 8, "namespace", &scalar(namespace, false));
    }
    if !action.configuration.is_empty() {
        out.push_str("        configuration:\n");
        for (key, value) in &action.configuration {
            value_line(out, 10, key, value);
        }
    }
    for (field, names) in [
        ("inputArtifacts", &action.input_artifacts),
        ("outputArtifacts", &action.output_artifacts),
    ] {
        if !names.is_empty() {
            let names: Vec<String> = names.iter().map(|n| scalar(n, true)).collect();
            let _ = writeln!(out, "        {field}: [{}]", names.join(", "));
        }
    }
    if let Some(timeout) = action.timeout_in_minutes {
        let _ = writeln!(out, "        timeoutInMinutes: {timeout}");
    }
    if !action.agent.is_empty() {
        out.push_str("        agent:\n");
        for (key, value) in &action.agent {
            value_line(out, 10, key, value);
        }
    }
}

fn line(out: &mut String, indent: usize, key: &str, value: &str) {
    let _ = writeln!(out, "{:indent$}{}: {value}", "", scalar(key, false));
}

/// `key: value`, with a block literal for a multi-line value that allows one.
fn value_line(out: &mut String, indent: usize, key: &str, value: &str) {
    let Some(chomp) = literal(value) else {
        return line(out, indent, key, &scalar(value, false));
    };
    let _ = writeln!(out, "{:indent$}{}: |{chomp}", "", scalar(key, false));
    let body = value.trim_end_matches('\n');
    for text in body.split('\n') {
        if text.is_empty() {
            out.push('\n');
        } else {
            let _ = writeln!(out, "{:width$}{text}", "", width = indent + 2);
        }
    }
    // Keep (`|+`): the newlines past the first are empty lines of the block.
    let trailing = value.len() - body.len();
    for _ in 1..trailing {
        out.push('\n');
    }
}

/// The chomping indicator of a block literal for `value` ("" for one final newline,
/// "-" for none, "+" for more), or `None` when a quoted scalar is needed.
fn literal(value: &str) -> Option<&'static str> {
    let body = value.trim_end_matches('\n');
    let suitable = body.contains('\n')
        && !body.starts_with([' ', '\t', '\n'])
        && body
            .chars()
            .all(|c| c == '\n' || c == '\t' || !needs_escape(c))
        && body.split('\n').all(|l| !l.ends_with([' ', '\t']));
    if !suitable {
        return None;
    }
    Some(match value.len() - body.len() {
        0 => "-",
        1 => "",
        _ => "+",
    })
}

/// A scalar written plain when YAML reads it back as the same string, else double-quoted.
/// `flow` is for values inside `{...}` or `[...]`.
fn scalar(value: &str, flow: bool) -> String {
    if plain(value, flow) {
        value.to_owned()
    } else {
        quoted(value)
    }
}

fn plain(value: &str, flow: bool) -> bool {
    let Some(first) = value.chars().next() else {
        return false;
    };
    if value.trim() != value || !(first.is_ascii_alphanumeric() || "/._$(".contains(first)) {
        return false;
    }
    if value.contains(": ") || value.ends_with(':') || value.contains(" #") {
        return false;
    }
    if flow && value.chars().any(|c| ",[]{}".contains(c)) {
        return false;
    }
    if !value.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
        return false;
    }
    matches!(Yaml::from_str(value), Yaml::String(_))
}

fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}')
}

fn quoted(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::BTreeMap;

    use super::*;
    use crate::model::{ActionTypeId, Category, Stage, Variable};

    fn pipeline(configuration: BTreeMap<String, String>) -> Pipeline {
        let action = |name: &str, category, provider: &str| Action {
            name: name.to_owned(),
            action_type_id: ActionTypeId {
                category,
                owner: "Sluice".to_owned(),
                provider: provider.to_owned(),
                version: "1".to_owned(),
            },
            run_order: 1,
            configuration: BTreeMap::new(),
            input_artifacts: Vec::new(),
            output_artifacts: Vec::new(),
            namespace: None,
            timeout_in_minutes: None,
            agent: BTreeMap::new(),
        };
        let mut build = action("Build", Category::Build, "commands");
        build.configuration = configuration;
        build.input_artifacts = vec!["Src".to_owned()];
        build.run_order = 2;
        build.agent.insert("os".to_owned(), "linux".to_owned());
        let mut source = action("Get", Category::Source, "git");
        source.output_artifacts = vec!["Src".to_owned()];
        source.namespace = Some("S".to_owned());
        Pipeline {
            name: "p".to_owned(),
            execution_mode: ExecutionMode::Queued,
            pipeline_type: Some("V2".to_owned()),
            variables: vec![Variable {
                name: "Env".to_owned(),
                default_value: Some("007".to_owned()),
                description: Some("a: b # c".to_owned()),
            }],
            stages: vec![
                Stage {
                    name: "Source".to_owned(),
                    actions: vec![source],
                    before_entry: None,
                    on_success: None,
                    on_failure: None,
                },
                Stage {
                    name: "Build".to_owned(),
                    actions: vec![build],
                    before_entry: None,
                    on_success: None,
                    on_failure: None,
                },
            ],
            schedules: Vec::new(),
            watch: Vec::new(),
            polling: None,
            triggers: Vec::new(),
        }
    }

    #[test]
    fn tricky_values_read_back() {
        let values = [
            "plain",
            "",
            " leading",
            "trailing ",
            "true",
            "null",
            "~",
            "0755",
            "1.5",
            "#{S.CommitId}",
            "/srv/#{S.CommitId}",
            "a: b",
            "- item",
            "[list]",
            "{map}",
            "it's \"quoted\"",
            "back\\slash",
            "line\nline\n",
            "line\nline",
            "line\nline\n\n\n",
            "\nstarts empty",
            "  indented\nsecond",
            "trailing space \nsecond",
            "tab\there\nsecond",
            "blank\n\nlines\n",
            "spaces only\n   \nline",
            "crlf\r\nline",
            "é unicode ü",
            "bell\u{7}",
            "del\u{7f}",
            "sep\u{2028}arator",
            "[{\"name\":\"A\",\"value\":\"1\",\"type\":\"PLAINTEXT\"}]",
            "version: 0.2\nphases:\n  build:\n    commands:\n      - make\n",
        ];
        let configuration: BTreeMap<String, String> = values
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("K{i:02}"), (*v).to_owned()))
            .collect();
        let p = pipeline(configuration);
        let yaml = to_yaml(&p);
        let parsed = crate::parse(&yaml, Some(crate::Format::Yaml))
            .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        assert_eq!(parsed.pipeline, p, "{yaml}");
    }

    #[test]
    fn layout_follows_the_readme() {
        let mut configuration = BTreeMap::new();
        configuration.insert("Commands".to_owned(), "make\nmake test\n".to_owned());
        let yaml = to_yaml(&pipeline(configuration));
        assert_eq!(
            yaml,
            r#"name: p
executionMode: QUEUED
pipelineType: V2
variables:
  - name: Env
    defaultValue: "007"
    description: "a: b # c"
stages:
  - name: Source
    actions:
      - name: Get
        actionTypeId: {category: Source, owner: Sluice, provider: git, version: "1"}
        namespace: S
        outputArtifacts: [Src]
  - name: Build
    actions:
      - name: Build
        actionTypeId: {category: Build, owner: Sluice, provider: commands, version: "1"}
        runOrder: 2
        configuration:
          Commands: |
            make
            make test
        inputArtifacts: [Src]
        agent:
          os: linux
"#
        );
    }
}
