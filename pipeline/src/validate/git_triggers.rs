//! Rules for `triggers`.

use std::collections::HashSet;

use crate::diag::{Path, Report};
use crate::git_trigger::{Patterns, compile_glob};
use crate::model::{Category, Pipeline};

const MAX_FILTERS: usize = 3;
const MAX_PATTERNS: usize = 8;
const MAX_PATTERN_LENGTH: usize = 255;

pub(crate) fn check(pipeline: &Pipeline, report: &mut Report) {
    let root = Path::default().key("triggers");
    let sources: Vec<&str> = pipeline
        .stages
        .first()
        .map(|s| s.actions.as_slice())
        .unwrap_or(&[])
        .iter()
        .filter(|a| a.action_type_id.category == Category::Source)
        .map(|a| a.name.as_str())
        .collect();
    let mut seen = HashSet::new();
    for (t, trigger) in pipeline.triggers.iter().enumerate() {
        let path = root.index(t).key("gitConfiguration");
        let git = &trigger.git_configuration;
        let name = git.source_action_name.as_str();
        let name_path = path.key("sourceActionName");
        if !sources.contains(&name) {
            report.push(
                &name_path,
                format!(
                    "{name:?} is not a source action of the first stage (its source actions: {})",
                    sources.join(", ")
                ),
            );
        } else if !seen.insert(name) {
            report.push(
                &name_path,
                format!("{name:?} already has a trigger; give each source action one trigger"),
            );
        }
        if git.push.is_empty() && git.pull_request.is_empty() {
            report.push(&path, "a trigger needs a push or a pullRequest filter list");
        }
        for (key, count) in [
            ("push", git.push.len()),
            ("pullRequest", git.pull_request.len()),
        ] {
            if count > MAX_FILTERS {
                report.push(
                    &path.key(key),
                    format!("at most {MAX_FILTERS} filters are allowed, found {count}"),
                );
            }
        }
        for (i, filter) in git.push.iter().enumerate() {
            let path = path.key("push").index(i);
            if filter.branches.is_some() && filter.tags.is_some() {
                report.push(&path, "a push filter takes branches or tags, not both");
            }
            patterns(report, &path.key("branches"), filter.branches.as_ref());
            patterns(report, &path.key("tags"), filter.tags.as_ref());
            patterns(report, &path.key("filePaths"), filter.file_paths.as_ref());
        }
        for (i, filter) in git.pull_request.iter().enumerate() {
            let path = path.key("pullRequest").index(i);
            let mut events = HashSet::new();
            for (e, event) in filter.events.iter().enumerate() {
                if !events.insert(*event) {
                    report.push(
                        &path.key("events").index(e),
                        format!("{} is listed twice; remove one", event.as_str()),
                    );
                }
            }
            patterns(report, &path.key("branches"), filter.branches.as_ref());
            patterns(report, &path.key("filePaths"), filter.file_paths.as_ref());
        }
    }
}

fn patterns(report: &mut Report, path: &Path, patterns: Option<&Patterns>) {
    let Some(patterns) = patterns else { return };
    if patterns.includes.is_empty() && patterns.excludes.is_empty() {
        report.push(path, "give includes, excludes or both");
    }
    for (key, list) in [
        ("includes", &patterns.includes),
        ("excludes", &patterns.excludes),
    ] {
        if list.len() > MAX_PATTERNS {
            report.push(
                &path.key(key),
                format!(
                    "at most {MAX_PATTERNS} patterns are allowed, found {}",
                    list.len()
                ),
            );
        }
        for (i, pattern) in list.iter().enumerate() {
            let path = path.key(key).index(i);
            let length = pattern.chars().count();
            if !(1..=MAX_PATTERN_LENGTH).contains(&length) {
                report.push(
                    &path,
                    format!(
                        "a pattern has 1 to {MAX_PATTERN_LENGTH} characters, this one {length}"
                    ),
                );
            } else if let Err(message) = compile_glob(pattern) {
                report.push(&path, message);
            }
        }
    }
}
