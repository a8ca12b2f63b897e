//! A test-only plugin that does, on request, what a plugin should not get away with.
//! Used by `agent/tests/plugin_host.rs`; never embedded in the agent.

use sluice_plugin_sdk::{
    ActionError, ActionOutcome, Command, Context, InvokePlugin, set_output_variable,
};

struct Probe;

impl InvokePlugin for Probe {
    fn invoke(ctx: &Context) -> Result<ActionOutcome, ActionError> {
        let summary = match ctx.require("Mode")? {
            "noop" => "nothing done".to_string(),
            "exec" => {
                let mut cmd = Command::new(ctx.require("Program")?)
                    .args(ctx.config("Args").unwrap_or("").lines());
                if let Some(cwd) = ctx.config("Cwd") {
                    cmd = cmd.cwd(cwd);
                }
                let r = cmd.run().map_err(ActionError::Failed)?;
                format!("exit {}: {}", r.exit_code, r.stdout_tail.trim())
            }
            "panic" => {
                eprintln!("about to panic");
                panic!("the probe panicked on purpose")
            }
            "loop" => {
                let mut x: u64 = 1;
                loop {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            }
            "alloc" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "exit" => std::process::exit(7),
            "read" => {
                let path = ctx.require("Cwd")?;
                match std::fs::read_to_string(path) {
                    Ok(text) => format!("read {} bytes", text.len()),
                    Err(e) => return Err(ActionError::Failed(format!("cannot read {path}: {e}"))),
                }
            }
            "var" => {
                let name = ctx.require("Name")?;
                let size: usize = ctx.require("Size")?.parse().unwrap_or(0);
                set_output_variable(name, &"v".repeat(size)).map_err(ActionError::Failed)?;
                format!("set {name}")
            }
            "http" => {
                // Program holds the URL.
                let url = ctx.require("Program")?;
                let response = sluice_plugin_sdk::http(&sluice_plugin_sdk::HttpRequest {
                    method: "GET".to_string(),
                    url: url.to_string(),
                    headers: Vec::new(),
                    body: Vec::new(),
                    timeout_ms: Some(5_000),
                })
                .map_err(ActionError::Failed)?;
                format!(
                    "status {}: {}",
                    response.status,
                    String::from_utf8_lossy(&response.body).trim()
                )
            }
            "env" => {
                let name = ctx.require("Name")?;
                match sluice_plugin_sdk::get_env(name).map_err(ActionError::Failed)? {
                    Some(value) => format!("{name}={value}"),
                    None => format!("{name} is not set"),
                }
            }
            "secret" => {
                // Leaks the secret every way a careless plugin could: a log line, its
                // own stdout in pieces, a program's output, base64, and the error.
                let name = ctx.require("SecretName")?;
                let value = sluice_plugin_sdk::get_secret(name).map_err(ActionError::Failed)?;
                sluice_plugin_sdk::log::info(&format!("plain: {value}"));
                let (head, tail) = value.split_at(value.len() / 2);
                print!("split: {head}");
                std::io::Write::flush(&mut std::io::stdout()).ok();
                println!("{tail}");
                Command::new("sh")
                    .args([
                        "-c",
                        "printf 'exec: %s\\n' \"$S\"; printf '%s' \"$S\" | base64 -w0; echo",
                    ])
                    .env("S", value.as_str())
                    .run_checked("echoing the secret")?;
                set_output_variable("Leak", &value).map_err(ActionError::Failed)?;
                return Err(ActionError::Failed(format!(
                    "failing with {value} in the message"
                )));
            }
            other => return Err(ActionError::InvalidConfig(format!("unknown Mode {other}"))),
        };
        Ok(ActionOutcome { summary })
    }
}

sluice_plugin_sdk::plugin!(Probe: Invoke);
