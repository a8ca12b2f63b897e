//! `sluice pipeline versions` and `sluice pipeline diff`: every stored version of a
//! pipeline, and what changed between two of them.
//!
//! A diff compares the two definitions in the form `sluice pipeline get` prints them:
//! pretty JSON with the keys of every object sorted, so the same definition always
//! renders to the same text and only real changes show up.

use std::io::IsTerminal;

use serde_json::{Map, Value, json};
use similar::{Algorithm, TextDiff};

use crate::Output;
use crate::client::{Api, ApiFailure, ConnectArgs, exit};
use crate::show;

fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

/// `GET /api/v1/pipelines/NAME/versions`: newest first.
async fn fetch_versions(api: &Api, name: &str) -> anyhow::Result<Vec<Value>> {
    let versions = api
        .get(&format!("/api/v1/pipelines/{name}/versions"))
        .await?;
    match versions {
        Value::Array(list) => Ok(list),
        other => anyhow::bail!(
            "the controller at {} answered the versions of \"{name}\" with something other than a list: {other}",
            api.url()
        ),
    }
}

/// `sluice pipeline versions NAME`.
pub async fn list(connect: &ConnectArgs, name: &str, out: Output) -> anyhow::Result<u8> {
    let api = Api::from_args(connect)?;
    let versions = fetch_versions(&api, name).await?;
    match out {
        Output::Json => print_json(&Value::Array(versions)),
        Output::Text => {
            println!(
                "{:>7}  {:<20}  {:>6}  {:>7}",
                "VERSION", "STORED", "STAGES", "ACTIONS"
            );
            for v in &versions {
                let line = format!(
                    "{:>7}  {:<20}  {:>6}  {:>7}",
                    // Value's Display ignores width: format the numbers as text first.
                    v["version"].to_string(),
                    show::time(&v["createdAtMs"]),
                    v["stages"].to_string(),
                    v["actions"].to_string()
                );
                if v["current"] == true {
                    println!("{line}  current");
                } else {
                    println!("{line}");
                }
            }
        }
    }
    Ok(exit::OK)
}

/// `sluice pipeline diff NAME V1 V2`: a unified diff from V1 to V2. Exits 0 whether or
/// not they differ; 5 if either version does not exist.
pub async fn diff(
    connect: &ConnectArgs,
    name: &str,
    from: i64,
    to: i64,
    out: Output,
) -> anyhow::Result<u8> {
    let api = Api::from_args(connect)?;
    let versions = fetch_versions(&api, name).await?;
    let known: Vec<i64> = versions
        .iter()
        .filter_map(|v| v["version"].as_i64())
        .collect();
    let mut missing = Vec::new();
    for v in [from, to] {
        if !known.contains(&v) && !missing.contains(&v) {
            missing.push(v);
        }
    }
    if !missing.is_empty() {
        let mut existing = known.clone();
        existing.sort_unstable();
        return Err(ApiFailure {
            status: 404,
            message: format!(
                "pipeline \"{name}\" has no version {}; its versions are {} (see `sluice pipeline versions {name}`)",
                join(&missing, " or "),
                join(&existing, ", ")
            ),
            errors: Vec::new(),
        }
        .into());
    }

    let old = definition_text(&api, name, from).await?;
    let new = definition_text(&api, name, to).await?;
    let unified = unified_diff(
        &old,
        &new,
        &format!("{name} version {from}"),
        &format!("{name} version {to}"),
    );
    match out {
        Output::Json => print_json(&json!({"from": from, "to": to, "diff": unified})),
        Output::Text if unified.is_empty() => {
            println!("versions {from} and {to} are identical");
        }
        Output::Text => {
            let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            if colour {
                print!("{}", colourise(&unified));
            } else {
                print!("{unified}");
            }
        }
    }
    Ok(exit::OK)
}

fn join(numbers: &[i64], separator: &str) -> String {
    numbers
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(separator)
}

/// One stored definition in its canonical text form.
async fn definition_text(api: &Api, name: &str, version: i64) -> anyhow::Result<String> {
    let stored = api
        .get(&format!("/api/v1/pipelines/{name}?version={version}"))
        .await?;
    match &stored["definition"] {
        Value::Null => anyhow::bail!(
            "the controller at {} returned version {version} of \"{name}\" without its definition",
            api.url()
        ),
        definition => Ok(canonical(definition)),
    }
}

/// Pretty JSON with every object's keys sorted, ending in a newline: what
/// `sluice pipeline get` prints, independent of how the JSON library orders maps.
pub fn canonical(definition: &Value) -> String {
    let mut text = serde_json::to_string_pretty(&sorted(definition)).unwrap_or_default();
    text.push('\n');
    text
}

fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.clone(), sorted(v)))
                    .collect::<Map<String, Value>>(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// The unified diff (3 lines of context) from `old` to `new`; empty when they are equal.
pub fn unified_diff(old: &str, new: &str, old_label: &str, new_label: &str) -> String {
    if old == new {
        return String::new();
    }
    TextDiff::configure()
        .algorithm(Algorithm::Patience)
        .diff_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(old_label, new_label)
        .to_string()
}

/// ANSI colours for a terminal: headers bold, hunks cyan, removals red, additions green.
fn colourise(unified: &str) -> String {
    let mut out = String::with_capacity(unified.len() + unified.len() / 4);
    for line in unified.split_inclusive('\n') {
        let (text, newline) = match line.strip_suffix('\n') {
            Some(text) => (text, "\n"),
            None => (line, ""),
        };
        let style = if text.starts_with("--- ") || text.starts_with("+++ ") {
            Some("1")
        } else if text.starts_with("@@") {
            Some("36")
        } else if text.starts_with('-') {
            Some("31")
        } else if text.starts_with('+') {
            Some("32")
        } else {
            None
        };
        match style {
            Some(style) => out.push_str(&format!("\x1b[{style}m{text}\x1b[0m{newline}")),
            None => out.push_str(line),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_form_sorts_keys_at_every_level() {
        let value: Value =
            serde_json::from_str(r#"{"b": 1, "a": {"z": [{"y": 1, "x": 2}], "c": "d"}}"#)
                .expect("valid JSON");
        let text = canonical(&value);
        assert!(text.find("\"a\"") < text.find("\"b\""));
        assert!(text.find("\"c\"") < text.find("\"z\""));
        assert!(text.find("\"x\"") < text.find("\"y\""));
        assert!(text.ends_with("}\n"));
    }

    #[test]
    fn unified_diff_shows_changed_lines_and_is_empty_when_equal() {
        let old = "a\nb\nc\n";
        let new = "a\nB\nc\n";
        let diff = unified_diff(old, new, "p version 1", "p version 2");
        assert_eq!(
            diff,
            "--- p version 1\n+++ p version 2\n@@ -1,3 +1,3 @@\n a\n-b\n+B\n c\n"
        );
        assert_eq!(unified_diff(old, old, "x", "y"), "");
    }

    #[test]
    fn colours_only_change_lines() {
        let coloured = colourise("--- a\n+++ b\n@@ -1 +1 @@\n same\n-old\n+new\n");
        assert!(coloured.contains("\x1b[31m-old\x1b[0m\n"));
        assert!(coloured.contains("\x1b[32m+new\x1b[0m\n"));
        assert!(coloured.contains("\n same\n"));
    }
}
