//! A test-only plugin that tries to reach the network; the host must refuse to load it
//! because its component imports `wasi:sockets`.

use sluice_plugin_sdk::{ActionContext, ActionError, ActionOutcome, Guest, export_plugin};

struct Net;

impl Guest for Net {
    fn run(_ctx: ActionContext) -> Result<ActionOutcome, ActionError> {
        match std::net::TcpStream::connect("127.0.0.1:9") {
            Ok(_) => Ok(ActionOutcome {
                summary: "connected".to_string(),
            }),
            Err(e) => Err(ActionError::Failed(format!("cannot connect: {e}"))),
        }
    }
}

export_plugin!(Net);
