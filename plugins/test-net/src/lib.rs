//! A test-only plugin that tries to reach the network; the host must refuse to load it
//! because its component imports `wasi:sockets`.

use sluice_plugin_sdk::{ActionError, ActionOutcome, Context, InvokePlugin};

struct Net;

impl InvokePlugin for Net {
    fn invoke(_ctx: &Context) -> Result<ActionOutcome, ActionError> {
        match std::net::TcpStream::connect("127.0.0.1:9") {
            Ok(_) => Ok(ActionOutcome {
                summary: "connected".to_string(),
            }),
            Err(e) => Err(ActionError::Failed(format!("cannot connect: {e}"))),
        }
    }
}

sluice_plugin_sdk::plugin!(Net: Invoke);
