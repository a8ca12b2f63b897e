//! The `__NAME__` plugin.

use sluice_plugin_sdk::{
    ActionError, ActionOutcome, CheckContext, Context, SourcePlugin, SourceRevision, log,
    set_output_variable,
};

struct Plugin;

impl SourcePlugin for Plugin {
    fn fetch(ctx: &Context) -> Result<ActionOutcome, ActionError> {
        let greeting = ctx.require("Greeting")?;
        let out = ctx
            .primary_output()
            .ok_or_else(|| ActionError::InvalidConfig("declare one output artifact".to_string()))?;
        std::fs::write(format!("{out}/greeting.txt"), format!("{greeting}\n"))
            .map_err(|e| ActionError::Failed(format!("cannot write greeting.txt: {e}")))?;
        set_output_variable("Revision", "1").map_err(ActionError::Failed)?;
        log::info(&format!("wrote {greeting:?}"));
        Ok(ActionOutcome {
            summary: format!("fetched revision 1: {greeting}"),
        })
    }

    fn check(ctx: &CheckContext) -> Result<Vec<SourceRevision>, ActionError> {
        // One revision that never changes: replace with a real lookup.
        if ctx.last_revision.as_deref() == Some("1") {
            return Ok(Vec::new());
        }
        Ok(vec![SourceRevision {
            id: "1".to_string(),
            summary: "the first revision".to_string(),
        }])
    }
}

sluice_plugin_sdk::plugin!(Plugin: Source);
