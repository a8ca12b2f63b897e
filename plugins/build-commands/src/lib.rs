//! `build-commands`: runs shell commands against the primary input artifact and copies
//! the declared output paths into the first output artifact.
//!
//! All commands run in one `sh -e -c` session, so `cd`, variables and functions carry
//! over from one line to the next and the first failing command stops the build.

use sluice_plugin_sdk::{
    ActionError, ActionOutcome, BuildPlugin, Command, Context, TestPlugin, log,
};

struct BuildCommands;

impl BuildPlugin for BuildCommands {
    fn build(ctx: &Context) -> Result<ActionOutcome, ActionError> {
        let commands = ctx.require("Commands")?;
        let output_paths = parse_output_paths(ctx.config("OutputPaths").unwrap_or(""))?;

        // The source directory: the primary input, or scratch space if there is none.
        let src = match ctx.primary_input() {
            Some(p) => p.to_string(),
            None => ctx.tmp_dir(),
        };
        let workdir = match ctx.config("WorkingDirectory") {
            Some(dir) => {
                let dir = sluice_plugin_sdk::relative_path("WorkingDirectory", dir)?;
                format!("{src}/{dir}")
            }
            None => src.clone(),
        };
        if !output_paths.is_empty() && ctx.primary_output().is_none() {
            return Err(ActionError::InvalidConfig(
                "OutputPaths is set but the action declares no output artifact".to_string(),
            ));
        }

        let lines = commands.lines().filter(|l| !l.trim().is_empty()).count();
        log::info(&format!("running {lines} command line(s) in {workdir}"));
        let result = Command::new("sh")
            .args(["-e", "-c", commands])
            .env("SLUICE_PIPELINE", ctx.pipeline())
            .env("SLUICE_EXECUTION_ID", ctx.execution_id())
            .env("SLUICE_STAGE", ctx.stage())
            .env("SLUICE_ACTION", ctx.action())
            .env("SLUICE_SRC_DIR", src.as_str())
            .cwd(workdir.as_str())
            .run()
            .map_err(ActionError::Failed)?;
        if result.exit_code != 0 {
            return Err(ActionError::Failed(format!(
                "command exited with status {}{}",
                result.exit_code,
                sluice_plugin_sdk::last_line_suffix(&result.stderr_tail)
            )));
        }

        if let Some(out) = ctx.primary_output()
            && !output_paths.is_empty()
        {
            for p in &output_paths {
                let full = format!("{src}/{p}");
                if std::fs::symlink_metadata(&full).is_err() {
                    return Err(ActionError::Failed(format!(
                        "output path {p} does not exist after the commands ran (looked for {full})"
                    )));
                }
            }
            // cp --parents recreates each path's directories under the output.
            Command::new("cp")
                .args(["-a", "--parents", "--"])
                .args(output_paths.iter().map(String::as_str))
                .arg(out)
                .cwd(src.as_str())
                .run_checked("copying OutputPaths into the output artifact")?;
        }

        Ok(ActionOutcome {
            summary: if output_paths.is_empty() {
                format!("ran {lines} command line(s)")
            } else {
                format!(
                    "ran {lines} command line(s), packed {} output path(s)",
                    output_paths.len()
                )
            },
        })
    }
}

/// Splits `OutputPaths` on newlines and commas, and checks each is relative and stays
/// inside the source directory.
fn parse_output_paths(raw: &str) -> Result<Vec<String>, ActionError> {
    let mut paths = Vec::new();
    for p in raw
        .split(['\n', ','])
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let p = sluice_plugin_sdk::relative_path("OutputPaths", p)?;
        if !paths.contains(&p) {
            paths.push(p);
        }
    }
    Ok(paths)
}

impl TestPlugin for BuildCommands {
    fn test(ctx: &Context) -> Result<ActionOutcome, ActionError> {
        <BuildCommands as BuildPlugin>::build(ctx)
    }
}

sluice_plugin_sdk::plugin!(BuildCommands: Build, Test);
