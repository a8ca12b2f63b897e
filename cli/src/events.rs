//! `sluice events`: the controller's state-change events, read from its Server-Sent
//! Events stream (`GET /api/v1/events`), one per line; with `--follow` the stream stays
//! open, and a dropped connection is resumed with `Last-Event-ID`, until Ctrl-C.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use serde_json::Value;

use crate::Output;
use crate::client::{Api, ApiFailure, ConnectArgs};

/// What `sluice events` asks for.
pub struct EventsArgs {
    /// Keep the stream open.
    pub follow: bool,
    /// Only this pipeline's events.
    pub pipeline: Option<String>,
    /// Only this execution's events.
    pub execution: Option<String>,
    /// Events after this id.
    pub since: Option<i64>,
}

/// One event of the stream.
#[derive(Debug, Default, PartialEq)]
struct SseEvent {
    id: Option<String>,
    event: Option<String>,
    data: String,
}

/// Splits Server-Sent Events out of a byte stream as it arrives.
#[derive(Default)]
struct SseParser {
    buffer: String,
    pending: Vec<u8>,
}

impl SseParser {
    /// Feeds bytes; returns the events they complete.
    fn feed(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        // Keep an incomplete UTF-8 sequence for the next chunk.
        self.pending.extend_from_slice(bytes);
        let valid = match std::str::from_utf8(&self.pending) {
            Ok(text) => text.len(),
            Err(e) => e.valid_up_to(),
        };
        self.buffer
            .push_str(&String::from_utf8_lossy(&self.pending[..valid]));
        self.pending.drain(..valid);
        let mut events = Vec::new();
        loop {
            let normalized = self.buffer.replace("\r\n", "\n");
            let Some(end) = normalized.find("\n\n") else {
                self.buffer = normalized;
                return events;
            };
            let block = normalized[..end].to_string();
            self.buffer = normalized[end + 2..].to_string();
            let mut event = SseEvent::default();
            let mut data: Vec<&str> = Vec::new();
            for line in block.lines() {
                if line.starts_with(':') {
                    continue;
                }
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "id" => event.id = Some(value.to_string()),
                    "event" => event.event = Some(value.to_string()),
                    "data" => data.push(value),
                    _ => {}
                }
            }
            if !data.is_empty() {
                event.data = data.join("\n");
                events.push(event);
            }
        }
    }
}

/// The short name of a detail-type: pipeline, stage or action.
fn kind(detail_type: &str) -> &str {
    match detail_type {
        "CodePipeline Pipeline Execution State Change" => "pipeline",
        "CodePipeline Stage Execution State Change" => "stage",
        "CodePipeline Action Execution State Change" => "action",
        other => other,
    }
}

/// One line for people: id, time, kind, state, pipeline/execution[/stage[/action]].
fn text_line(event: &Value) -> String {
    let detail = &event["detail"];
    let mut path = format!(
        "{}/{}",
        detail["pipeline"].as_str().unwrap_or("?"),
        detail["execution-id"].as_str().unwrap_or("?")
    );
    for key in ["stage", "action"] {
        if let Some(name) = detail[key].as_str() {
            path.push('/');
            path.push_str(name);
        }
    }
    if let Some(attempt) = detail["attempt"]
        .as_i64()
        .filter(|_| detail["action"].is_string())
    {
        path.push_str(&format!(" (attempt {attempt})"));
    }
    format!(
        "{:>6}  {:<24}  {:<8}  {:<10}  {path}",
        event["id"].as_i64().unwrap_or(0),
        event["time"].as_str().unwrap_or(""),
        kind(event["detail-type"].as_str().unwrap_or("")),
        detail["state"].as_str().unwrap_or("?"),
    )
}

/// Prints one event; false once stdout is gone (a closed pipe).
fn print(event: &Value, out: Output) -> anyhow::Result<bool> {
    let line = match out {
        Output::Json => event.to_string(),
        Output::Text => text_line(event),
    };
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e).context("cannot write to standard output"),
    }
}

/// How one connection to the stream ended.
enum Ended {
    /// The controller closed it (it sent everything, without --follow).
    Closed,
    /// Standard output was closed.
    StdoutGone,
    /// The connection broke; resume after the last event seen.
    Broken(anyhow::Error),
}

async fn read_stream(
    api: &Api,
    args: &EventsArgs,
    last_id: &mut Option<i64>,
    out: Output,
) -> anyhow::Result<Ended> {
    let mut path = format!("/api/v1/events?follow={}", args.follow);
    for (key, value) in [("pipeline", &args.pipeline), ("execution", &args.execution)] {
        if let Some(value) = value {
            path.push_str(&format!("&{key}={}", query_escape(value)));
        }
    }
    if let Some(since) = args.since {
        path.push_str(&format!("&since={since}"));
    }
    let response = match api.get_event_stream(&path, *last_id).await {
        Ok(response) => response,
        // Refusals (bad token, bad request) will not get better by retrying.
        Err(e) if e.downcast_ref::<ApiFailure>().is_some() => return Err(e),
        Err(e) => return Ok(Ended::Broken(e)),
    };
    let mut body = response.bytes_stream();
    let mut parser = SseParser::default();
    while let Some(chunk) = body.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => {
                return Ok(Ended::Broken(
                    anyhow::Error::new(e).context("the event stream broke"),
                ));
            }
        };
        for event in parser.feed(&chunk) {
            let value: Value = serde_json::from_str(&event.data).with_context(|| {
                format!(
                    "the controller sent an event that is not JSON: {}",
                    event.data
                )
            })?;
            if let Some(id) = event.id.as_deref().and_then(|id| id.parse().ok()) {
                *last_id = Some(id);
            }
            if !print(&value, out)? {
                return Ok(Ended::StdoutGone);
            }
        }
    }
    Ok(Ended::Closed)
}

fn query_escape(value: &str) -> String {
    let mut out = String::new();
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `sluice events`.
pub async fn events(connect: &ConnectArgs, args: EventsArgs, out: Output) -> anyhow::Result<u8> {
    let api = Api::from_args(connect)?;
    let mut last_id: Option<i64> = None;
    let mut pause = Duration::from_secs(1);
    loop {
        let ended = tokio::select! {
            ended = read_stream(&api, &args, &mut last_id, out) => ended?,
            _ = tokio::signal::ctrl_c() => return Ok(0),
        };
        match ended {
            Ended::Closed if !args.follow => return Ok(0),
            Ended::StdoutGone => return Ok(0),
            Ended::Broken(e) if !args.follow => return Err(e),
            Ended::Closed => {
                eprintln!("The controller closed the event stream; reconnecting.");
            }
            Ended::Broken(e) => {
                eprintln!("{e:#}; reconnecting in {}s.", pause.as_secs());
            }
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = tokio::signal::ctrl_c() => return Ok(0),
        }
        pause = (pause * 2).min(Duration::from_secs(30));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_events_split_anywhere() {
        let stream = ":\n\nid:1\nevent:CodePipeline Stage Execution State Change\ndata:{\"a\":1}\n\nid: 2\r\ndata: {\"é\":2}\r\n\r\n";
        let bytes = stream.as_bytes();
        for split in 0..bytes.len() {
            let mut parser = SseParser::default();
            let mut events = parser.feed(&bytes[..split]);
            events.extend(parser.feed(&bytes[split..]));
            assert_eq!(
                events,
                vec![
                    SseEvent {
                        id: Some("1".into()),
                        event: Some("CodePipeline Stage Execution State Change".into()),
                        data: "{\"a\":1}".into(),
                    },
                    SseEvent {
                        id: Some("2".into()),
                        event: None,
                        data: "{\"é\":2}".into(),
                    },
                ],
                "split at {split}"
            );
        }
    }

    #[test]
    fn a_line_names_the_action() {
        let event = serde_json::json!({
            "id": 7,
            "time": "2025-01-02T03:04:05.678Z",
            "detail-type": "CodePipeline Action Execution State Change",
            "detail": {"pipeline": "p", "execution-id": "e", "stage": "Build",
                       "action": "Test", "state": "FAILED", "attempt": 2},
        });
        assert_eq!(
            text_line(&event),
            "     7  2025-01-02T03:04:05.678Z  action    FAILED      p/e/Build/Test (attempt 2)"
        );
    }
}
