//! Text rendering of API objects for people.

use std::time::{Duration, UNIX_EPOCH};

use serde_json::Value;

/// An RFC 3339 time from milliseconds since the epoch.
pub fn time(ms: &Value) -> String {
    match ms.as_i64() {
        Some(ms) if ms > 0 => {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms as u64))
                .to_string()
        }
        _ => "-".into(),
    }
}

/// A duration between two millisecond times (or until now).
pub fn took(start: &Value, end: &Value) -> String {
    let Some(start) = start.as_i64() else {
        return "-".into();
    };
    let end = end.as_i64().unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(start)
    });
    let ms = (end - start).max(0);
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

/// A status word with a symbol, so that it reads without colour.
pub fn status(status: &Value) -> String {
    let s = status.as_str().unwrap_or("Pending");
    let symbol = match s {
        "Succeeded" => "✔",
        "Failed" => "✖",
        "InProgress" => "●",
        "Stopped" | "Cancelled" | "Superseded" | "Abandoned" => "■",
        _ => "○",
    };
    format!("{symbol} {s}")
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// The full view of an execution.
pub fn execution(e: &Value) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "Execution {}\n  pipeline:  {} (version {})\n  status:    {}\n",
        str_of(&e["id"]),
        str_of(&e["pipelineName"]),
        e["pipelineVersion"],
        status(&e["status"]),
    ));
    if let Some(summary) = e["statusSummary"].as_str() {
        out.push_str(&format!("  summary:   {summary}\n"));
    }
    for (label, key) in [("variable", "variables"), ("revision", "sourceRevisions")] {
        for (k, v) in e[key].as_object().into_iter().flatten() {
            out.push_str(&format!("  {label:<10} {k} = {}\n", str_of(v)));
        }
    }
    if let Some(target) = e["rollbackTarget"].as_str() {
        out.push_str(&format!(
            "  type:      ROLLBACK of stage {} to execution {target}\n",
            e["rollbackStage"]
                .as_i64()
                .and_then(|i| e["stages"].get(i as usize))
                .map_or("?", |s| str_of(&s["name"]))
        ));
    }
    out.push_str(&format!(
        "  trigger:   {} ({})\n  started:   {}\n  duration:  {}\n",
        str_of(&e["triggerType"]),
        str_of(&e["triggerDetail"]),
        time(&e["startedAtMs"]),
        took(&e["startedAtMs"], &e["finishedAtMs"]),
    ));
    for stage in e["stages"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "\n  Stage {:<24} {:<14} {}\n",
            str_of(&stage["name"]),
            status(&stage["status"]),
            took(&stage["startedAtMs"], &stage["finishedAtMs"]),
        ));
        if e["rollbackStage"].is_i64() && stage["status"].is_null() {
            continue;
        }
        if let Some(summary) = stage["summary"].as_str() {
            out.push_str(&format!("    beforeEntry: {summary}\n"));
        }
        if let Some(summary) = stage["onSuccessSummary"].as_str() {
            out.push_str(&format!("    onSuccess: {summary}\n"));
        }
        if let Some(summary) = stage["onFailureSummary"].as_str() {
            out.push_str(&format!("    onFailure: {summary}\n"));
        }
        let retries = stage["retries"].as_i64().unwrap_or(0);
        if retries > 0 {
            let automatic = stage["autoRetries"].as_i64().unwrap_or(0);
            out.push_str(&format!(
                "    retried {retries} time(s), {automatic} of them automatically\n"
            ));
        }
        for run in stage["ruleRuns"].as_array().into_iter().flatten() {
            let mut line = format!(
                "    rule {:<21} {:<14} {:<8} attempt {}",
                str_of(&run["actionName"]),
                status(&run["status"]),
                took(&run["startedAtMs"], &run["finishedAtMs"]),
                run["id"],
            );
            if let Some(agent) = run["agentId"].as_str() {
                line.push_str(&format!(" on {agent}"));
            }
            if let Some(error) = run["error"].as_str() {
                line.push_str(&format!(": {error}"));
            }
            if let Some(reason) = run["waitingReason"].as_str() {
                line.push_str(&format!(" (waiting: {reason})"));
            }
            out.push_str(&line);
            out.push('\n');
        }
        for action in stage["actions"].as_array().into_iter().flatten() {
            let attempts = action["attempts"].as_array().cloned().unwrap_or_default();
            let latest = attempts.last().cloned().unwrap_or(Value::Null);
            out.push_str(&format!(
                "    {:<26} {:<14} {:<8} {}/{} runOrder {}\n",
                str_of(&action["name"]),
                status(&action["status"]),
                took(&latest["startedAtMs"], &latest["finishedAtMs"]),
                str_of(&action["category"]),
                str_of(&action["provider"]),
                action["runOrder"],
            ));
            for attempt in &attempts {
                let mut line = format!("      attempt {}", attempt["attempt"]);
                if let Some(agent) = attempt["agentId"].as_str() {
                    line.push_str(&format!(" on {agent}"));
                }
                if let Some(summary) = attempt["summary"].as_str() {
                    line.push_str(&format!(": {summary}"));
                }
                if let Some(error) = attempt["error"].as_str() {
                    line.push_str(&format!(": {error}"));
                }
                if let Some(reason) = attempt["waitingReason"].as_str() {
                    line.push_str(&format!(" (waiting: {reason})"));
                }
                if attempt["log"]["complete"] == Value::Bool(false) {
                    line.push_str(" [log incomplete]");
                }
                out.push_str(&line);
                out.push('\n');
                if let Some(vars) = attempt["outputVariables"].as_object() {
                    for (k, v) in vars {
                        let v = str_of(v).lines().next().unwrap_or("");
                        out.push_str(&format!("        {k} = {v}\n"));
                    }
                }
                let approval = &attempt["approval"];
                if approval.is_object() {
                    out.push_str(&approval_summary(attempt, approval));
                }
                let tests = &attempt["tests"];
                if tests.is_object() {
                    out.push_str(&tests_summary(tests));
                }
            }
        }
    }
    let artifacts = e["artifacts"].as_array().cloned().unwrap_or_default();
    if !artifacts.is_empty() {
        out.push_str("\n  Artifacts\n");
        for a in artifacts {
            out.push_str(&format!(
                "    {:<20} sha256:{}  {} bytes\n",
                str_of(&a["name"]),
                str_of(&a["sha256"]),
                a["size"]
            ));
        }
    }
    out
}

/// A manual approval: pending until when, notified or not, or the decision.
fn approval_summary(attempt: &Value, a: &Value) -> String {
    let mut out = String::new();
    if attempt["phase"] == "approval" {
        out.push_str(&format!(
            "        waiting for approval until {}\n",
            time(&a["expiresAtMs"])
        ));
    }
    if let Some(error) = a["notifyError"].as_str() {
        out.push_str(&format!("        notification failed: {error}\n"));
    } else if a["notifiedAtMs"].is_number() {
        out.push_str(&format!(
            "        notified at {}\n",
            time(&a["notifiedAtMs"])
        ));
    }
    if let Some(decision) = a["decision"].as_str() {
        out.push_str(&format!(
            "        {decision} by {} at {}{}\n",
            str_of(&a["decidedBy"]),
            time(&a["decidedAtMs"]),
            a["comment"]
                .as_str()
                .map(|c| format!(": {c}"))
                .unwrap_or_default()
        ));
    }
    out
}

/// An attempt's test report: totals, failed cases with their messages, the slowest.
fn tests_summary(t: &Value) -> String {
    let mut out = format!(
        "        tests: {} total, {} passed, {} failed, {} errored, {} skipped ({} ms)\n",
        t["total"], t["passed"], t["failed"], t["errored"], t["skipped"], t["durationMs"]
    );
    for case in t["failures"].as_array().into_iter().flatten() {
        let message = str_of(&case["message"]).lines().next().unwrap_or("");
        out.push_str(&format!(
            "          {} {} / {}: {message}\n",
            str_of(&case["status"]).to_uppercase(),
            str_of(&case["suite"]),
            str_of(&case["name"]),
        ));
    }
    let slowest: Vec<String> = t["slowest"]
        .as_array()
        .into_iter()
        .flatten()
        .take(3)
        .map(|c| format!("{} ({} ms)", str_of(&c["name"]), c["durationMs"]))
        .collect();
    if !slowest.is_empty() {
        out.push_str(&format!("          slowest: {}\n", slowest.join(", ")));
    }
    out
}

/// One line per stage, for progress.
pub fn progress_line(e: &Value) -> String {
    let stages: Vec<String> = e["stages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let symbol = match s["status"].as_str() {
                Some("Succeeded") => "✔",
                Some("Failed") => "✖",
                Some("InProgress") => "●",
                _ => "○",
            };
            format!("{symbol} {}", str_of(&s["name"]))
        })
        .collect();
    stages.join("  →  ")
}
