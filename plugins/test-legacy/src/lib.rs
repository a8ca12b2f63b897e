//! A test-only plugin built directly against the frozen `sluice:plugin@0.1.0` WIT (not
//! the SDK, which targets the current version), so the tests can prove that the host
//! still runs plugins of the previous version.

wit_bindgen::generate!({
    world: "action-plugin",
    path: "../../plugin-sdk/wit/0.1.0",
});

use sluice::plugin::host;
use sluice::plugin::types::{ExecRequest, LogLevel};

struct Legacy;

impl Guest for Legacy {
    fn run(ctx: ActionContext) -> Result<ActionOutcome, ActionError> {
        let name = ctx
            .config
            .iter()
            .find(|(k, _)| k == "Name")
            .map(|(_, v)| v.clone())
            .ok_or_else(|| ActionError::InvalidConfig("Name is required".to_string()))?;
        host::log(LogLevel::Info, &format!("legacy plugin greets {name}"));
        let echoed = host::exec(&ExecRequest {
            program: "echo".to_string(),
            args: vec![format!("hello {name}")],
            env: Vec::new(),
            cwd: None,
        })
        .map_err(ActionError::Failed)?;
        host::set_output_variable("Greeting", echoed.stdout_tail.trim())
            .map_err(ActionError::Failed)?;
        Ok(ActionOutcome {
            summary: format!("greeted {name} with 0.1.0"),
        })
    }
}

export!(Legacy);
