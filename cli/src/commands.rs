//! The user verbs: pipelines, executions, logs and agents, over the HTTPS API.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use anyhow::Context;
use reqwest::Method;
use serde_json::{Value, json};

use crate::Output;
use crate::client::{Api, ConnectArgs, exit};
use crate::show;

fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

fn format_query(file: &Path) -> &'static str {
    match sluice_pipeline::Format::from_path(file) {
        Some(sluice_pipeline::Format::Json) => "?format=json",
        Some(sluice_pipeline::Format::Yaml) => "?format=yaml",
        None => "",
    }
}

fn read_definition(file: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))
}

/// `sluice pipeline validate FILE`: offline, against the built-in providers.
pub fn validate(file: &Path, out: Output) -> anyhow::Result<u8> {
    let text = read_definition(file)?;
    let format = sluice_pipeline::Format::from_path(file);
    match sluice_pipeline::parse_and_validate(&text, format, &sluice_pipeline::Catalog::builtin()) {
        Ok(parsed) => {
            match out {
                Output::Json => print_json(&json!({
                    "valid": true,
                    "name": parsed.pipeline.name,
                    "warnings": parsed.warnings.iter().map(|w| json!({"path": w.path, "message": w.message})).collect::<Vec<_>>(),
                })),
                Output::Text => {
                    for warning in &parsed.warnings {
                        eprintln!("warning: {}: {warning}", file.display());
                    }
                    println!(
                        "{}: pipeline \"{}\" is valid ({} stages, {} actions)",
                        file.display(),
                        parsed.pipeline.name,
                        parsed.pipeline.stages.len(),
                        parsed
                            .pipeline
                            .stages
                            .iter()
                            .map(|s| s.actions.len())
                            .sum::<usize>()
                    );
                }
            }
            Ok(0)
        }
        Err(diagnostics) => {
            match out {
                Output::Json => print_json(&json!({
                    "valid": false,
                    "errors": diagnostics.0.iter().map(|d| json!({"path": d.path, "message": d.message})).collect::<Vec<_>>(),
                })),
                Output::Text => {
                    eprintln!(
                        "{}: {} problem{}:",
                        file.display(),
                        diagnostics.0.len(),
                        if diagnostics.0.len() == 1 { "" } else { "s" }
                    );
                    for d in &diagnostics.0 {
                        eprintln!("  {d}");
                    }
                    if diagnostics
                        .0
                        .iter()
                        .any(|d| d.message.starts_with("unknown provider"))
                    {
                        eprintln!(
                            "hint: offline validation knows only the built-in providers; \
                             `sluice pipeline validate --remote {}` checks against the \
                             controller's installed plugins",
                            file.display()
                        );
                    }
                }
            }
            Ok(exit::INVALID)
        }
    }
}

/// `sluice pipeline validate --remote FILE`: the controller's plugins and grants.
pub async fn validate_remote(
    connect: &ConnectArgs,
    file: &Path,
    out: Output,
) -> anyhow::Result<u8> {
    let api = Api::from_args(connect)?;
    let text = read_definition(file)?;
    let query = format_query(file);
    let result = api
        .send_text(
            Method::POST,
            &format!("/api/v1/pipelines/validate{query}"),
            text,
        )
        .await?;
    match out {
        Output::Json => print_json(&result),
        Output::Text => {
            for w in result["warnings"].as_array().into_iter().flatten() {
                eprintln!(
                    "warning: {}: {}",
                    w["path"].as_str().unwrap_or(""),
                    w["message"].as_str().unwrap_or("")
                );
            }
            println!(
                "{}: pipeline \"{}\" is valid on {}",
                file.display(),
                result["name"].as_str().unwrap_or(""),
                api.url()
            );
        }
    }
    Ok(exit::OK)
}

/// `sluice pipeline create|update FILE`.
pub async fn save_pipeline(
    connect: &ConnectArgs,
    file: &Path,
    update: bool,
    out: Output,
) -> anyhow::Result<u8> {
    let api = Api::from_args(connect)?;
    let text = read_definition(file)?;
    let query = format_query(file);
    let result = if update {
        let name = sluice_pipeline::parse(&text, sluice_pipeline::Format::from_path(file))
            .map(|p| p.pipeline.name)
            .map_err(|d| anyhow::anyhow!("{}: {d}", file.display()))?;
        api.send_text(
            Method::PUT,
            &format!("/api/v1/pipelines/{name}{query}"),
            text,
        )
        .await?
    } else {
        api.send_text(Method::POST, &format!("/api/v1/pipelines{query}"), text)
            .await?
    };
    match out {
        Output::Json => print_json(&result),
        Output::Text => {
            for w in result["warnings"].as_array().into_iter().flatten() {
                eprintln!(
                    "warning: {}: {}",
                    w["path"].as_str().unwrap_or(""),
                    w["message"].as_str().unwrap_or("")
                );
            }
            println!(
                "{} pipeline \"{}\" (version {})",
                if update { "Updated" } else { "Created" },
                result["name"].as_str().unwrap_or(""),
                result["version"]
            );
        }
    }
    Ok(0)
}

/// `sluice pipeline get NAME`.
pub async fn get_pipeline(
    connect: &ConnectArgs,
    name: &str,
    version: Option<i64>,
    out: Output,
) -> anyhow::Result<u8> {
    let api = Api::from_args(connect)?;
    let path = match version {
        Some(v) => format!("/api/v1/pipelines/{name}?version={v}"),
        None => format!("/api/v1/pipelines/{name}"),
    };
    let pipeline = api.get(&path).await?;
    match out {
        Output::Json => print_json(&pipeline),
        Output::Text => {
            println!(
                "# {} version {}, stored {}",
                name,
                pipeline["version"],
                show::time(&pipeline["createdAtMs"])
            );
            print_json(&pipeline["definition"]);
        }
    }
    Ok(0)
}

/// `sluice pipeline list`.
pub async fn list_pipelines(connect: &ConnectArgs, out: Output) -> anyhow::Result<u8> {
    let api = Api::from_args(connect)?;
    let pipelines = api.get("/api/v1/pipelines").await?;
    match out {
        Output::Json => print_json(&pipelines),
        Output::Text => {
            println!("{:<32} {:>7}  UPDATED", "NAME", "VERSION");
            for p in pipelines.as_array().into_iter().flatten() {
                println!(
                    "{:<32} {:>7}  {}",
                    p["name"].as_str().unwrap_or(""),
                    p["version"],
                    show::time(&p["updatedAtMs"])
                );
            }
        }
    }
    Ok(0)
}

/// `sluice pipeline start NAME [--wait]`.
pub async fn start(
    connect: &ConnectArgs,
    name: &str,
    request: &Value,
    wait: bool,
    out: Output,
) -> anyhow::Result<u8> {
    let api = Api::from_args(connect)?;
    let started = api
        .send_json(
            Method::POST,
            &format!("/api/v1/pipelines/{name}/executions"),
            request,
        )
        .await?;
    let id = started["id"].as_str().unwrap_or("").to_string();
    if !wait {
        match out {
            Output::Json => print_json(&started),
            Output::Text => println!("{id}"),
        }
        return Ok(0);
    }
    if out == Output::Text {
        eprintln!("Started execution {id} of {name}");
    }
    finish_waiting(&api, &id, out).await
}

/// Follows an execution until it ends, drawing one progress line if `live`.
pub async fn wait_for(api: &Api, id: &str, live: bool) -> anyhow::Result<Value> {
    let mut revision = String::new();
    let spinner = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
    let mut tick = 0usize;
    loop {
        let e = api
            .get(&format!("/api/v1/executions/{id}?wait=1&since={revision}"))
            .await?;
        revision = e["revision"].as_str().unwrap_or("").to_string();
        let finished = e["status"] != "InProgress" && e["status"] != "Stopping";
        if live {
            tick += 1;
            let symbol = if finished {
                ' '
            } else {
                spinner[tick % spinner.len()]
            };
            let mut line = format!("\r\x1b[2K{symbol} {}", show::progress_line(&e));
            if let Some(summary) = e["statusSummary"].as_str().filter(|_| !finished) {
                line.push_str(&format!("  ({summary})"));
            }
            eprint!("{line}");
            let _ = std::io::stderr().flush();
            if finished {
                eprintln!();
            }
        }
        if finished {
            return Ok(e);
        }
    }
}

/// The body of a start request (CodePipeline's StartPipelineExecution shape).
pub fn start_request(
    variables: &[(String, String)],
    revisions: &[(String, String)],
    token: Option<&str>,
) -> Value {
    let mut request = json!({
        "variables": variables
            .iter()
            .map(|(name, value)| json!({"name": name, "value": value}))
            .collect::<Vec<_>>(),
        "sourceRevisions": revisions
            .iter()
            .map(|(action, commit)| json!({
                "actionName": action,
                "revisionType": "COMMIT_ID",
                "revisionValue": commit,
            }))
            .collect::<Vec<_>>(),
    });
    if let Some(token) = token {
        request["clientRequestToken"] = json!(token);
    }
    request
}

/// `sluice execution approve|reject ID --stage S --action A`.
pub async fn decide(
    connect: &ConnectArgs,
    id: &str,
    stage: &str,
    action: &str,
    approve: bool,
    comment: &str,
    out: Output,
) -> anyhow::Result<u8> {
    let api = Api::from_args(connect)?;
    let decision = if approve { "Approved" } else { "Rejected" };
    let execution = api
        .send_json(
            Method::POST,
            &format!("/api/v1/executions/{id}/approvals"),
            &json!({"stage": stage, "action": action, "decision": decision, "comment": comment}),
        )
        .await?;
    match out {
        Output::Json => print_json(&execution),
        Output::Text => println!(
            "{decision} {stage}/{action}; execution {id} is {}",
            execution["status"].as_str().unwrap_or("")
        ),
    }
    Ok(exit::OK)
}

/// `sluice execution retry ID --stage NAME`.
pub async fn retry(
    connect: &ConnectArgs,
    id: &str,
    stage: &str,
    all: bool,
    wait: bool,
    out: Output,
) -> anyhow::Result<u8> {
    let api = Api::from_args(connect)?;
    let mode = if all { "ALL_ACTIONS" } else { "FAILED_ACTIONS" };
    let execution = api
        .send_json(
            Method::POST,
            &format!("/api/v1/executions/{id}/stages/{stage}/retry"),
            &json!({ "retryMode": mode }),
        )
        .await?;
    if !wait {
        match out {
            Output::Json => print_json(&execution),
            Output::Text => println!("Retrying stage {stage} of execution {id} ({mode})"),
        }
        return Ok(exit::OK);
    }
    finish_waiting(&api, id, out).await
}

/// `sluice execution override-condition ID --stage NAME [--condition KIND]`.
pub async fn override_condition(
    connect: &ConnectArgs,
    id: &str,
    stage: &str,
    condition: Option<&str>,
    wait: bool,
    out: Output,
) -> anyhow::Result<u8> {
    let api = Api::from_args(connect)?;
    let body = match condition {
        Some("on-success") => json!({ "conditionType": "ON_SUCCESS" }),
        Some(_) => json!({ "conditionType": "BEFORE_ENTRY" }),
        None => json!({}),
    };
    let execution = api
        .send_json(
            Method::POST,
            &format!("/api/v1/executions/{id}/stages/{stage}/override-condition"),
            &body,
        )
        .await?;
    if !wait {
        match out {
            Output::Json => print_json(&execution),
            Output::Text => {
                println!("Overrode the failed condition of stage {stage}; execution {id} goes on")
            }
        }
        return Ok(exit::OK);
    }
    finish_waiting(&api, id, out).await
}

/// `sluice pipeline rollback NAME --stage STAGE [--target ID]`.
pub async fn rollback(
    connect: &ConnectArgs,
    name: &str,
    stage: &str,
    target: Option<&str>,
    wait: bool,
    out: Output,
) -> anyhow::Result<u8> {
    let api = Api::from_args(connect)?;
    let mut body = json!({ "stageName": stage });
    if let Some(target) = target {
        body["targetPipelineExecutionId"] = json!(target);
    }
    let execution = api
        .send_json(
            Method::POST,
            &format!("/api/v1/pipelines/{name}/rollback"),
            &body,
        )
        .await?;
    let id = execution["id"].as_str().unwrap_or_default().to_string();
    if !wait {
        match out {
            Output::Json => print_json(&execution),
            Output::Text => println!(
                "Rolling back stage {stage} to execution {} with execution {id}",
                execution["rollbackTarget"].as_str().unwrap_or("?")
            ),
        }
        return Ok(exit::OK);
    }
    finish_waiting(&api, &id, out).await
}

/// Waits for an execution to end, shows it, and turns its result into an exit code.
async fn finish_waiting(api: &Api, id: &str, out: Output) -> anyhow::Result<u8> {
    let done = wait_for(api, id, out == Output::Text).await?;
    match out {
        Output::Json => print_json(&done),
        Output::Text => print!("{}", show::execution(&done)),
    }
    Ok(if done["status"] == "Succeeded" {
        exit::OK
    } else {
        exit::EXECUTION_FAILED
    })
}

/// `sluice pipeline disable-transition|enable-transition NAME STAGE`.
pub async fn set_transition(
    connect: &ConnectArgs,
    name: &str,
    stage: &str,
    enabled: bool,
    reason: &str,
    out: Output,
) -> anyhow::Result<u8> {
    let api = Api::from_args(connect)?;
    let transitions = api
        .send_json(
            Method::POST,
            &format!("/api/v1/pipelines/{name}/stages/{stage}/transition"),
            &json!({"enabled": enabled, "reason": reason}),
        )
        .await?;
    match out {
        Output::Json => print_json(&transitions),
        Output::Text if enabled => println!(
            "The transition into stage {stage} of {name} is enabled; waiting executions go on."
        ),
        Output::Text => println!(
            "The transition into stage {stage} of {name} is disabled; executions wait in front of it."
        ),
    }
    Ok(exit::OK)
}

/// `sluice pipeline transitions NAME`.
pub async fn transitions(connect: &ConnectArgs, name: &str, out: Output) -> anyhow::Result<u8> {
    let api = Api::from_args(connect)?;
    let transitions = api
        .get(&format!("/api/v1/pipelines/{name}/transitions"))
        .await?;
    match out {
        Output::Json => print_json(&transitions),
        Output::Text => {
            println!(
                "{:<24} {:<9} {:<21} {:<16} REASON",
                "INTO STAGE", "STATE", "CHANGED", "BY"
            );
            for t in transitions.as_array().into_iter().flatten() {
                println!(
                    "{:<24} {:<9} {:<21} {:<16} {}",
                    t["stageName"].as_str().unwrap_or(""),
                    if t["enabled"] == true {
                        "enabled"
                    } else {
                        "disabled"
                    },
                    show::time(&t["changedAtMs"]),
                    t["changedBy"].as_str().unwrap_or(""),
                    t["reason"].as_str().unwrap_or("")
                );
            }
        }
    }
    Ok(exit::OK)
}

/// `sluice execution stop ID`.
pub async fn stop(
    connect: &ConnectArgs,
    id: &str,
    abandon: bool,
    reason: &str,
    wait: bool,
    out: Output,
) -> anyhow::Result<u8> {
    let api = Api::from_args(connect)?;
    let mut execution = api
        .send_json(
            Method::POST,
            &format!("/api/v1/executions/{id}/stop"),
            &json!({"abandon": abandon, "reason": reason}),
        )
        .await?;
    if wait {
        execution = wait_for(&api, id, out == Output::Text).await?;
    }
    match out {
        Output::Json => print_json(&execution),
        Output::Text => println!(
            "Execution {id} is {}{}",
            execution["status"].as_str().unwrap_or(""),
            execution["statusSummary"]
                .as_str()
                .map(|s| format!(": {s}"))
                .unwrap_or_default()
        ),
    }
    Ok(exit::OK)
}

/// `sluice execution get ID`.
pub async fn get_execution(connect: &ConnectArgs, id: &str, out: Output) -> anyhow::Result<u8> {
    let api = Api::from_args(connect)?;
    let e = api.get(&format!("/api/v1/executions/{id}")).await?;
    match out {
        Output::Json => print_json(&e),
        Output::Text => print!("{}", show::execution(&e)),
    }
    Ok(0)
}

/// `sluice execution list`.
pub async fn list_executions(
    connect: &ConnectArgs,
    pipeline: Option<&str>,
    limit: u32,
    out: Output,
) -> anyhow::Result<u8> {
    let api = Api::from_args(connect)?;
    let mut path = format!("/api/v1/executions?limit={limit}");
    if let Some(p) = pipeline {
        path.push_str(&format!("&pipeline={p}"));
    }
    let list = api.get(&path).await?;
    match out {
        Output::Json => print_json(&list),
        Output::Text => {
            println!(
                "{:<36}  {:<20} {:<14} {:<21} DURATION",
                "EXECUTION", "PIPELINE", "STATUS", "STARTED"
            );
            for e in list.as_array().into_iter().flatten() {
                println!(
                    "{:<36}  {:<20} {:<14} {:<21} {}",
                    e["id"].as_str().unwrap_or(""),
                    e["pipelineName"].as_str().unwrap_or(""),
                    show::status(&e["status"]),
                    show::time(&e["startedAtMs"]),
                    show::took(&e["startedAtMs"], &e["finishedAtMs"]),
                );
            }
        }
    }
    Ok(0)
}

/// `sluice logs ID [--action STAGE/ACTION] [--follow]`.
pub async fn logs(
    connect: &ConnectArgs,
    id: &str,
    action: Option<&str>,
    follow: bool,
) -> anyhow::Result<u8> {
    let api = Api::from_args(connect)?;
    let filter = match action {
        Some(a) => Some(
            a.split_once('/')
                .map(|(s, a)| (s.to_string(), a.to_string()))
                .with_context(|| format!("--action \"{a}\" must be STAGE/ACTION"))?,
        ),
        None => None,
    };
    let mut offsets: BTreeMap<i64, u64> = BTreeMap::new();
    let mut finished_attempts: std::collections::BTreeSet<i64> = Default::default();
    let mut headers_printed: std::collections::BTreeSet<i64> = Default::default();
    let mut matched_any = false;
    loop {
        let e = api.get(&format!("/api/v1/executions/{id}")).await?;
        let execution_done = e["status"] != "InProgress";
        let mut all_done = true;
        for stage in e["stages"].as_array().into_iter().flatten() {
            // Actions, then the runs of Commands rules (named `condition:rule`).
            let mut logged: Vec<(String, Vec<Value>)> = stage["actions"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|a| {
                    let name = a["name"].as_str().unwrap_or("").to_string();
                    (name, a["attempts"].as_array().cloned().unwrap_or_default())
                })
                .collect();
            for run in stage["ruleRuns"].as_array().into_iter().flatten() {
                let name = run["actionName"].as_str().unwrap_or("").to_string();
                match logged.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, runs)) => runs.push(run.clone()),
                    None => logged.push((name, vec![run.clone()])),
                }
            }
            for (action_name, attempts) in &logged {
                let stage_name = stage["name"].as_str().unwrap_or("");
                if let Some((s, a)) = &filter
                    && (s != stage_name || a != action_name)
                {
                    continue;
                }
                matched_any = true;
                for attempt in attempts {
                    let Some(attempt_id) = attempt["id"].as_i64() else {
                        continue;
                    };
                    if finished_attempts.contains(&attempt_id) {
                        continue;
                    }
                    let offset = offsets.entry(attempt_id).or_insert(0);
                    if headers_printed.insert(attempt_id) {
                        println!(
                            "==> {stage_name}/{action_name} (attempt {}) <==",
                            attempt["attempt"]
                        );
                    }
                    loop {
                        let response = api
                            .get_raw(&format!(
                                "/api/v1/executions/{id}/logs/{attempt_id}?offset={offset}"
                            ))
                            .await?;
                        let state = response
                            .headers()
                            .get("x-log-state")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("running")
                            .to_string();
                        let bytes = response.bytes().await?;
                        std::io::stdout().write_all(&bytes)?;
                        *offset += bytes.len() as u64;
                        if !bytes.is_empty() && bytes.len() >= 1 << 20 {
                            continue;
                        }
                        if state == "running" {
                            all_done = false;
                        } else {
                            if state == "incomplete" {
                                println!(
                                    "[sluice] this log is incomplete: part of it never reached the controller"
                                );
                            }
                            finished_attempts.insert(attempt_id);
                        }
                        break;
                    }
                }
            }
        }
        std::io::stdout().flush()?;
        if filter.is_some() && !matched_any {
            anyhow::bail!("execution {id} has no action {}", action.unwrap_or(""));
        }
        if !follow || (execution_done && all_done) {
            return Ok(0);
        }
        // Wait for something to change rather than polling blindly.
        let revision = e["revision"].as_str().unwrap_or("");
        api.get(&format!("/api/v1/executions/{id}?wait=1&since={revision}"))
            .await?;
    }
}

/// `sluice agent token create`.
pub async fn create_token(
    connect: &ConnectArgs,
    labels: BTreeMap<String, String>,
    ttl: std::time::Duration,
    out: Output,
) -> anyhow::Result<u8> {
    let api = Api::from_args(connect)?;
    let token = api
        .send_json(
            Method::POST,
            "/api/v1/agents/tokens",
            &json!({"labels": labels, "ttlSeconds": ttl.as_secs()}),
        )
        .await?;
    match out {
        Output::Json => print_json(&token),
        Output::Text => {
            println!(
                "Join token (single use, expires {}):",
                show::time(&token["expiresAtMs"])
            );
            println!("  {}", token["token"].as_str().unwrap_or(""));
            println!("Controller CA fingerprint (sha256):");
            println!("  {}", token["caFingerprint"].as_str().unwrap_or(""));
            println!("On the new build machine, run:");
            println!(
                "  sluice-agent join --controller {} --token {} --ca-fingerprint {} --state-dir /var/lib/sluice-agent",
                api.url(),
                token["token"].as_str().unwrap_or(""),
                token["caFingerprint"].as_str().unwrap_or("")
            );
            println!("  sluice-agent run --state-dir /var/lib/sluice-agent");
        }
    }
    Ok(0)
}

/// `sluice agent list`.
/// `sluice agent drain|undrain|revoke ID`.
pub async fn agent_control(
    connect: &ConnectArgs,
    id: &str,
    control: &str,
    out: Output,
) -> anyhow::Result<u8> {
    let api = Api::from_args(connect)?;
    let agent = api
        .send_json(
            Method::POST,
            &format!("/api/v1/agents/{id}/{control}"),
            &json!({}),
        )
        .await?;
    match out {
        Output::Json => print_json(&agent),
        Output::Text => match control {
            "drain" => {
                println!("Agent {id} is drained: it finishes what it runs and gets nothing new")
            }
            "undrain" => println!("Agent {id} takes work again"),
            _ => println!("Agent {id} is revoked: it is disconnected and can no longer connect"),
        },
    }
    Ok(0)
}

pub async fn list_agents(connect: &ConnectArgs, out: Output) -> anyhow::Result<u8> {
    let api = Api::from_args(connect)?;
    let agents = api.get("/api/v1/agents").await?;
    match out {
        Output::Json => print_json(&agents),
        Output::Text => {
            println!(
                "{:<20} {:<10} {:<8} {:<8} {:<21} LABELS",
                "AGENT", "STATE", "RUNNING", "VERSION", "LAST HEARTBEAT"
            );
            for a in agents.as_array().into_iter().flatten() {
                let labels: Vec<String> = a["labels"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                    .collect();
                let state = match (a["state"].as_str().unwrap_or(""), a["drained"].as_bool()) {
                    (state, Some(true)) if state != "revoked" => format!("{state},drained"),
                    (state, _) => state.to_string(),
                };
                println!(
                    "{:<20} {:<10} {:<8} {:<8} {:<21} {}",
                    a["id"].as_str().unwrap_or(""),
                    state,
                    format!("{}/{}", a["running"], a["capacity"]),
                    a["version"].as_str().unwrap_or("-"),
                    show::time(&a["lastHeartbeatMs"]),
                    labels.join(",")
                );
            }
        }
    }
    Ok(0)
}
