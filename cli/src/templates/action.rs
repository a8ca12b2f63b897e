//! The `__NAME__` plugin.

use sluice_plugin_sdk::{
    __IMPORTS__
};

struct Plugin;

impl __TRAIT__ for Plugin {
    fn __METHOD__(ctx: &Context) -> Result<ActionOutcome, ActionError> {
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
        set_output_variable("Files", &files.to_string()).map_err(ActionError::Failed)?;
        Ok(ActionOutcome {
            summary: format!("{greeting}: {files} file(s)"),
        })
    }
}

sluice_plugin_sdk::plugin!(Plugin: __CATEGORY__);
