//! The `__NAME__` plugin.

use sluice_plugin_sdk::{
    ActionError, ActionOutcome, BuildPlugin, Context, log, set_output_variable,
};

struct Plugin;

impl BuildPlugin for Plugin {
    fn build(ctx: &Context) -> Result<ActionOutcome, ActionError> {
        let greeting = ctx.require("Greeting")?;
        // Input artifacts are folders under /workspace/inputs; the plugin sees nothing else.
        let files = match ctx.primary_input() {
            Some(dir) => std::fs::read_dir(dir)
                .map_err(|e| ActionError::Failed(format!("cannot read {dir}: {e}")))?
                .count(),
            None => 0,
        };
        log::info(&format!(
            "{greeting} from {} ({files} input file(s))",
            ctx.action()
        ));
        // Output artifacts are folders to fill; declared ones are created empty.
        if let Some(out) = ctx.primary_output() {
            std::fs::write(
                format!("{out}/greeting.txt"),
                format!("{greeting}, {files} file(s)\n"),
            )
            .map_err(|e| ActionError::Failed(format!("cannot write greeting.txt: {e}")))?;
        }
        set_output_variable("Files", &files.to_string()).map_err(ActionError::Failed)?;
        Ok(ActionOutcome {
            summary: format!("{greeting}: {files} file(s)"),
        })
    }
}

sluice_plugin_sdk::plugin!(Plugin: Build);
