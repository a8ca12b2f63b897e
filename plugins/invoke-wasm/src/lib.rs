//! `invoke-wasm`: runs a WASM component that a pipeline carries in an input artifact,
//! the role Lambda plays in CodePipeline, without a cloud.
//!
//! The host runs the component with no capabilities at all (no programs, hosts, secrets
//! or environment), in this action's workspace and within its deadline. Its log lines
//! join this action's log; its output variables become this action's, so later actions
//! read them as `#{Namespace.Name}`.

use sluice_plugin_sdk::{
    ActionError, ActionOutcome, Context, InvokePlugin, log, relative_path, run_component,
    set_output_variable,
};

struct InvokeWasm;

impl InvokePlugin for InvokeWasm {
    fn invoke(ctx: &Context) -> Result<ActionOutcome, ActionError> {
        let source = ctx.primary_input().ok_or_else(|| {
            ActionError::InvalidConfig(
                "invoke-wasm needs an input artifact that holds the component".to_string(),
            )
        })?;
        let relative = relative_path("ComponentPath", ctx.require("ComponentPath")?)?;
        let path = format!("{source}/{relative}");
        let parameters = parse_parameters(ctx.config("Parameters").unwrap_or(""))?;
        log::info(&format!(
            "running component {relative} with {} parameter(s)",
            parameters.len()
        ));
        let outcome = run_component(&path, &parameters).map_err(ActionError::Failed)?;
        for (name, value) in &outcome.output_variables {
            set_output_variable(name, value).map_err(ActionError::Failed)?;
        }
        Ok(ActionOutcome {
            summary: outcome.summary,
        })
    }
}

/// `KEY=value` lines; blank lines and `#` comments are skipped.
fn parse_parameters(text: &str) -> Result<Vec<(String, String)>, ActionError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(ActionError::InvalidConfig(format!(
                "Parameters line {}: {line:?} must be KEY=value",
                i + 1
            )));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(ActionError::InvalidConfig(format!(
                "Parameters line {}: the key is empty",
                i + 1
            )));
        }
        if out.iter().any(|(k, _)| k == key) {
            return Err(ActionError::InvalidConfig(format!(
                "Parameters line {}: {key} is set twice",
                i + 1
            )));
        }
        out.push((key.to_string(), value.trim().to_string()));
    }
    Ok(out)
}

sluice_plugin_sdk::plugin!(InvokeWasm: Invoke);
