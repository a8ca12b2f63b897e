//! End-to-end tests of state-change events: the exact sequence an execution produces,
//! read through `sluice events`, through the Server-Sent Events endpoint with a raw
//! HTTPS client (resuming with `since` and `Last-Event-ID`), and POSTed to a webhook
//! that fails at first; and a controller killed mid-execution that neither loses nor
//! repeats events. Real controller and agent processes, real plugins.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use sluice_e2e::*;

/// What a successful run of [`source_and_build`] produces, as "kind STATE name".
const SUCCEEDED: [&str; 10] = [
    "pipeline STARTED",
    "stage STARTED Source",
    "action STARTED Snapshot",
    "action SUCCEEDED Snapshot",
    "stage SUCCEEDED Source",
    "stage STARTED Build",
    "action STARTED Work",
    "action SUCCEEDED Work",
    "stage SUCCEEDED Build",
    "pipeline SUCCEEDED",
];

const FAILED: [&str; 10] = [
    "pipeline STARTED",
    "stage STARTED Source",
    "action STARTED Snapshot",
    "action SUCCEEDED Snapshot",
    "stage SUCCEEDED Source",
    "stage STARTED Build",
    "action STARTED Work",
    "action FAILED Work",
    "stage FAILED Build",
    "pipeline FAILED",
];

/// "kind STATE name" of an event.
fn summary(event: &Value) -> String {
    let kind = match event["detail-type"].as_str().unwrap() {
        "CodePipeline Pipeline Execution State Change" => "pipeline",
        "CodePipeline Stage Execution State Change" => "stage",
        "CodePipeline Action Execution State Change" => "action",
        other => panic!("unexpected detail-type {other}"),
    };
    let detail = &event["detail"];
    let name = detail["action"]
        .as_str()
        .or(detail["stage"].as_str())
        .unwrap_or("");
    format!("{kind} {} {name}", detail["state"].as_str().unwrap())
        .trim()
        .to_string()
}

fn summaries(events: &[Value]) -> Vec<String> {
    events.iter().map(summary).collect()
}

/// `sluice events --execution ID -o json`: one JSON document per line.
fn cli_events(controller: &Controller, execution: &str) -> Vec<Value> {
    ok(controller
        .cli()
        .args(["events", "--execution", execution, "-o", "json"]))
    .lines()
    .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
    .collect()
}

/// Waits until the execution's events end with a pipeline-level end.
fn wait_events(controller: &Controller, execution: &str, count: usize) -> Vec<Value> {
    wait_for(
        &format!("{count} events of execution {execution}"),
        Duration::from_secs(30),
        || {
            let events = cli_events(controller, execution);
            (events.len() >= count).then_some(events)
        },
    )
}

/// Where the controller's API is, a fresh client trusting it and the API token, for
/// one raw request (each on its own runtime).
struct Endpoint {
    url: String,
    client: reqwest::Client,
    token: String,
}

fn endpoint(controller: &Controller) -> Endpoint {
    Endpoint {
        url: controller.url.clone(),
        client: controller.https_client(),
        token: controller.api_token(),
    }
}

/// GET returning (status, JSON body).
fn get_json(api: &ApiClient, path: &str, token: bool) -> (u16, Value) {
    let (status, _, body) = api.request("GET", path, token, None);
    (status, serde_json::from_str(&body).unwrap())
}

/// One Server-Sent Event: id, event, data.
#[derive(Debug)]
struct Sse {
    id: i64,
    event: String,
    data: Value,
}

/// Splits complete events off the front of `buffer`.
fn take_events(buffer: &mut String) -> Vec<Sse> {
    let mut out = Vec::new();
    while let Some(end) = buffer.find("\n\n") {
        let block: String = buffer.drain(..end + 2).collect();
        let (mut id, mut event, mut data) = (None, None, None);
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("id:") {
                id = Some(v.trim().parse().unwrap());
            } else if let Some(v) = line.strip_prefix("event:") {
                event = Some(v.trim().to_string());
            } else if let Some(v) = line.strip_prefix("data:") {
                data = Some(serde_json::from_str(v.trim()).unwrap());
            }
        }
        if let (Some(id), Some(event), Some(data)) = (id, event, data) {
            out.push(Sse { id, event, data });
        }
    }
    out
}

/// GET /api/v1/events with `query` and headers, reading until `until` says enough (or
/// the stream ends). Returns the status, content type and events.
fn sse(
    endpoint: &Endpoint,
    query: &str,
    headers: &[(&str, &str)],
    until: impl Fn(&[Sse]) -> bool,
) -> (u16, String, Vec<Sse>) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut request = endpoint
            .client
            .get(format!("{}/api/v1/events?{query}", endpoint.url))
            .bearer_auth(&endpoint.token);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let mut response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let mut buffer = String::new();
        let mut events = Vec::new();
        let read = async {
            while let Some(chunk) = response.chunk().await.unwrap() {
                buffer.push_str(std::str::from_utf8(&chunk).unwrap());
                events.extend(take_events(&mut buffer));
                if until(&events) {
                    break;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(60), read)
            .await
            .expect("the event stream stalled");
        (status, content_type, events)
    })
}

/// What a webhook receiver answered to each delivery, and the body it got.
type Deliveries = Arc<Mutex<Vec<(u16, Value)>>>;

/// An HTTP server on 127.0.0.1 that answers 500 to the first `failures` requests and
/// 200 after; it records (status answered, body) of each.
fn webhook_receiver(failures: usize) -> (String, Deliveries) {
    let seen: Deliveries = Arc::default();
    let log = seen.clone();
    let url = http_receiver("/hooks/sluice", move |_, body| {
        let mut log = log.lock().unwrap();
        let status = if log.len() < failures { 500 } else { 200 };
        log.push((status, serde_json::from_slice(&body).unwrap()));
        status
    });
    (url, seen)
}

#[test]
fn executions_produce_exact_event_sequences_over_cli_sse_and_webhook() {
    let dir = tempfile::tempdir().unwrap();
    let (hook, received) = webhook_receiver(2);
    let (controller, _agent) = start_with_agent(dir.path(), &["--event-webhook", &hook], 2);
    controller.create_pipeline(&source_and_build(dir.path(), "evented", "echo built"));
    controller.create_pipeline(&source_and_build(dir.path(), "broken", "echo no; exit 3"));

    // A run that succeeds, read with `sluice events -o json`.
    let ok_id = controller.start_pipeline("evented");
    assert_eq!(
        controller.wait_finished(&ok_id, Duration::from_secs(60))["status"],
        "Succeeded"
    );
    let events = wait_events(&controller, &ok_id, SUCCEEDED.len());
    assert_eq!(summaries(&events), SUCCEEDED, "{events:#?}");
    let ids: Vec<i64> = events.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    for event in &events {
        assert_eq!(event["source"], "sluice");
        assert!(event["time"].as_str().unwrap().ends_with('Z'), "{event}");
        assert_eq!(event["detail"]["pipeline"], "evented");
        assert_eq!(event["detail"]["execution-id"], ok_id.as_str());
        assert_eq!(event["detail"]["version"], 1);
    }
    let work = &events[7]["detail"];
    assert_eq!(work["stage"], "Build");
    assert_eq!(work["attempt"], 1);
    assert_eq!(
        work["type"],
        serde_json::json!({"owner": "Sluice", "provider": "commands", "category": "Build", "version": "1"})
    );
    assert_eq!(
        events[0]["detail"]["execution-trigger"]["trigger-type"],
        "StartPipelineExecution"
    );

    // The text form: one line per event.
    let text = ok(controller.cli().args(["events", "--execution", &ok_id]));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), SUCCEEDED.len(), "{text}");
    assert!(
        lines[7].contains("action")
            && lines[7].contains("SUCCEEDED")
            && lines[7].contains(&format!("evented/{ok_id}/Build/Work (attempt 1)")),
        "{text}"
    );
    assert!(
        lines[0].contains("pipeline") && lines[0].contains(&format!("evented/{ok_id}")),
        "{text}"
    );

    // The SSE endpoint, read raw: the same events, with id: and event: set.
    let (status, content_type, raw) = sse(
        &endpoint(&controller),
        &format!("execution={ok_id}&follow=false"),
        &[],
        |_| false,
    );
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    assert_eq!(raw.len(), SUCCEEDED.len());
    for (sse, cli) in raw.iter().zip(&events) {
        assert_eq!(sse.data, *cli);
        assert_eq!(sse.id, cli["id"].as_i64().unwrap());
        assert_eq!(sse.event, cli["detail-type"].as_str().unwrap());
    }
    // Resuming after the third event, with since= and with Last-Event-ID (which wins).
    let third = ids[2].to_string();
    let (_, _, rest) = sse(
        &endpoint(&controller),
        &format!("execution={ok_id}&follow=false&since={third}"),
        &[],
        |_| false,
    );
    assert_eq!(
        rest.iter().map(|e| e.id).collect::<Vec<_>>(),
        ids[3..].to_vec()
    );
    let (_, _, rest) = sse(
        &endpoint(&controller),
        &format!("execution={ok_id}&follow=false&since=0"),
        &[("last-event-id", third.as_str())],
        |_| false,
    );
    assert_eq!(
        rest.iter().map(|e| e.id).collect::<Vec<_>>(),
        ids[3..].to_vec()
    );
    // `sluice events --since` too.
    let since = ok(controller
        .cli()
        .args(["events", "--execution", &ok_id, "--since", &third]));
    assert_eq!(since.lines().count(), SUCCEEDED.len() - 3, "{since}");

    // A live stream of one pipeline's events while a failing run happens.
    let stream = {
        let api = endpoint(&controller);
        std::thread::spawn(move || {
            sse(&api, "pipeline=broken", &[], |events| {
                events.iter().any(|e| summary(&e.data) == "pipeline FAILED")
            })
        })
    };
    // Let the stream connect before the run starts (it would catch up anyway).
    std::thread::sleep(Duration::from_millis(500));
    let failed_id = controller.start_pipeline("broken");
    let failed = controller.wait_finished(&failed_id, Duration::from_secs(60));
    assert_eq!(failed["status"], "Failed", "{failed:#}");
    let (status, _, live) = stream.join().unwrap();
    assert_eq!(status, 200);
    let live: Vec<Value> = live.into_iter().map(|e| e.data).collect();
    assert_eq!(summaries(&live), FAILED, "{live:#?}");
    assert!(
        live.iter()
            .all(|e| e["detail"]["execution-id"] == failed_id.as_str())
    );
    let failure = &live[7]["detail"];
    assert_eq!(failure["execution-result"]["error-code"], "JobFailed");
    assert!(
        failure["execution-result"]["external-execution-summary"]
            .as_str()
            .unwrap()
            .contains('3'),
        "{failure}"
    );
    assert!(
        live[9]["detail"]["status-summary"]
            .as_str()
            .unwrap()
            .contains("Build/Work failed"),
        "{:#}",
        live[9]
    );

    // The webhook got every event, in order, after two refusals.
    let all: Vec<i64> = cli_all(&controller)
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    assert_eq!(all.len(), SUCCEEDED.len() + FAILED.len());
    let delivered = wait_for(
        "the webhook to get every event",
        Duration::from_secs(60),
        || {
            let seen = received.lock().unwrap().clone();
            let ok: Vec<Value> = seen
                .iter()
                .filter(|(status, _)| *status == 200)
                .map(|(_, body)| body.clone())
                .collect();
            (ok.len() >= all.len()).then_some((seen, ok))
        },
    );
    let (seen, ok_bodies) = delivered;
    // The first event was refused twice, then delivered; nothing else was sent twice.
    assert_eq!(seen[0].0, 500);
    assert_eq!(seen[1].0, 500);
    assert_eq!(seen[0].1["id"], all[0]);
    assert_eq!(seen[1].1["id"], all[0]);
    assert_eq!(
        ok_bodies
            .iter()
            .map(|b| b["id"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        all
    );
    // The body is the event as streamed: detail-type and id included.
    assert_eq!(ok_bodies[..SUCCEEDED.len()], events[..]);
    let api = ApiClient::new(&controller);
    let (status, hooks) = get_json(&api, "/api/v1/events/webhooks", true);
    assert_eq!(status, 200);
    assert_eq!(hooks[0]["url"], hook.as_str());
    assert_eq!(hooks[0]["deliveredId"], *all.last().unwrap());
    assert_eq!(hooks[0]["failures"], 0);

    // Events are for API token holders only.
    let (status, refused) = get_json(&api, "/api/v1/events?follow=false", false);
    assert_eq!(status, 401, "{refused}");
}

/// Every event, as `sluice events -o json` prints them.
fn cli_all(controller: &Controller) -> Vec<Value> {
    ok(controller.cli().args(["events", "-o", "json"]))
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[test]
fn a_restarted_controller_neither_loses_nor_repeats_events() {
    let dir = tempfile::tempdir().unwrap();
    let (hook, received) = webhook_receiver(0);
    let port = free_port();
    let flags = ["--heartbeat-interval", "500ms", "--event-webhook", &hook];
    let (mut controller, _agent) = start_with_agent_on(dir.path(), port, &flags, 1);
    controller.create_pipeline(&source_and_build(dir.path(), "slow", "sleep 2; echo built"));
    // A follower that must ride out both restarts.
    let mut follower = Follower::start(&controller, &["events", "--follow", "-o", "json"]);

    // Killed while the Build action runs: the agent finishes it and reports to the
    // restarted controller.
    let first = controller.start_pipeline("slow");
    wait_for("the Build action to start", Duration::from_secs(60), || {
        summaries(&cli_events(&controller, &first))
            .contains(&"action STARTED Work".to_string())
            .then_some(())
    });
    controller.kill();
    let mut controller = Controller::start(dir.path(), port, &flags);
    assert_eq!(
        controller.wait_finished(&first, Duration::from_secs(90))["status"],
        "Succeeded"
    );
    let events = wait_events(&controller, &first, SUCCEEDED.len());
    assert_eq!(summaries(&events), SUCCEEDED, "{events:#?}");

    // Killed after a run whose last events never made it to the database: the restart
    // records them again, in order, and nothing twice.
    let second = controller.start_pipeline("slow");
    assert_eq!(
        controller.wait_finished(&second, Duration::from_secs(60))["status"],
        "Succeeded"
    );
    wait_events(&controller, &second, SUCCEEDED.len());
    let recorded: Vec<i64> = cli_all(&controller)
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    assert_eq!(recorded.len(), 2 * SUCCEEDED.len());
    // (The follower has printed them all before the controller dies.)
    wait_for("the follower to catch up", Duration::from_secs(30), || {
        (follower.ids() == recorded).then_some(())
    });
    controller.kill();
    {
        let db = rusqlite::Connection::open(controller.data_dir.join("sluice.db")).unwrap();
        let removed = db
            .execute(
                "DELETE FROM events WHERE id IN
                     (SELECT id FROM events WHERE execution_id = ?1 ORDER BY id DESC LIMIT 4)",
                [&second],
            )
            .unwrap();
        assert_eq!(removed, 4);
    }
    let controller = Controller::start(dir.path(), port, &flags);
    let events = wait_events(&controller, &second, SUCCEEDED.len());
    assert_eq!(summaries(&events), SUCCEEDED, "{events:#?}");
    // Nothing more arrives for either execution.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(cli_events(&controller, &first).len(), SUCCEEDED.len());
    assert_eq!(cli_events(&controller, &second).len(), SUCCEEDED.len());

    // The webhook got every event at least once, in order, across both restarts.
    let all: Vec<i64> = cli_all(&controller)
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    let delivered = wait_for(
        "the webhook to get every event",
        Duration::from_secs(60),
        || {
            let ids: Vec<i64> = received
                .lock()
                .unwrap()
                .iter()
                .map(|(_, body)| body["id"].as_i64().unwrap())
                .collect();
            all.iter().all(|id| ids.contains(id)).then_some(ids)
        },
    );
    assert!(
        delivered.windows(2).all(|w| w[0] <= w[1]),
        "out of order: {delivered:?}"
    );

    // `sluice events --follow` reconnected after each restart with Last-Event-ID: it
    // printed every event, in order, none twice (it also saw the four that were lost
    // and recorded again under new ids).
    let followed = wait_for(
        "the follower to print every event",
        Duration::from_secs(60),
        || {
            let ids = follower.ids();
            all.iter().all(|id| ids.contains(id)).then_some(ids)
        },
    );
    assert!(
        followed.windows(2).all(|w| w[0] < w[1]),
        "repeated or out of order: {followed:?}"
    );
    assert_eq!(followed.len(), all.len() + 4, "{followed:?}");
    follower.stop();
}

/// A `sluice events` process whose output is collected line by line.
struct Follower {
    child: std::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Follower {
    fn start(controller: &Controller, args: &[&str]) -> Follower {
        let mut child = controller
            .cli()
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        Follower { child, lines }
    }

    /// The ids of the events printed so far.
    fn ids(&self) -> Vec<i64> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["id"]
                    .as_i64()
                    .unwrap()
            })
            .collect()
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Each signed delivery: its `X-Sluice-Signature-256` header (if any) and raw body.
type Signed = Arc<Mutex<Vec<(Option<String>, Vec<u8>)>>>;

/// An HTTP server on 127.0.0.1 that answers 200 and keeps each request's signature
/// header and raw body.
fn signature_receiver() -> (String, Signed) {
    let seen: Signed = Arc::default();
    let log = seen.clone();
    let url = http_receiver("/hooks/signed", move |headers, body| {
        let signature = headers.iter().find_map(|h| {
            h.strip_prefix("x-sluice-signature-256:")
                .map(|v| v.trim().to_string())
        });
        log.lock().unwrap().push((signature, body));
        200
    });
    (url, seen)
}

#[test]
fn webhook_deliveries_are_signed_with_the_named_secret_once_it_is_set() {
    let dir = tempfile::tempdir().unwrap();
    let (hook, received) = signature_receiver();
    let flags = [
        "--event-webhook",
        hook.as_str(),
        "--event-webhook-secret",
        "EVENTS_KEY",
    ];
    let (controller, _agent) = start_with_agent(dir.path(), &flags, 1);
    controller.create_pipeline(&source_and_build(dir.path(), "signed", "echo built"));
    let id = controller.start_pipeline("signed");
    controller.wait_finished(&id, Duration::from_secs(60));
    // Until the secret is set, nothing is delivered unsigned.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(received.lock().unwrap().is_empty());

    let key = "k3y-for-signing-events";
    ok(controller
        .cli()
        .args(["secret", "set", "EVENTS_KEY", "--value", key]));
    wait_for("signed deliveries", Duration::from_secs(120), || {
        (received.lock().unwrap().len() >= 2).then_some(())
    });
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key.as_bytes());
    for (signature, body) in received.lock().unwrap().iter() {
        let signature = signature.as_deref().expect("every delivery is signed");
        let hex_tag = signature.strip_prefix("sha256=").expect("sha256= prefix");
        let tag = hex::decode(hex_tag).unwrap();
        assert!(
            ring::hmac::verify(&key, body, &tag).is_ok(),
            "signature does not verify for {}",
            String::from_utf8_lossy(body)
        );
        let event: Value = serde_json::from_slice(body).unwrap();
        assert!(
            event["detail-type"]
                .as_str()
                .unwrap()
                .starts_with("CodePipeline ")
        );
    }
}

// ---- the sequences of stops, supersedes, approvals and rollbacks --------------------------

/// The events of a Source stage that succeeded, after the pipeline's STARTED.
const SOURCE_OK: [&str; 5] = [
    "pipeline STARTED",
    "stage STARTED Source",
    "action STARTED Snapshot",
    "action SUCCEEDED Snapshot",
    "stage SUCCEEDED Source",
];

/// `first` then `rest`, as owned strings.
fn sequence(first: &[&str], rest: &[&str]) -> Vec<String> {
    first.iter().chain(rest).map(|s| s.to_string()).collect()
}

/// Waits until the execution has ended and its events end with the pipeline's end;
/// then checks that nothing more arrives.
fn final_events(controller: &Controller, execution: &str) -> Vec<Value> {
    controller.wait_finished(execution, Duration::from_secs(60));
    let events = wait_for(
        &format!("the pipeline end event of {execution}"),
        Duration::from_secs(30),
        || {
            let events = cli_events(controller, execution);
            let last = events.last()?;
            let ended = summary(last).starts_with("pipeline ")
                && !matches!(
                    last["detail"]["state"].as_str(),
                    Some("STARTED" | "RESUMED" | "STOPPING")
                );
            ended.then_some(events)
        },
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(cli_events(controller, execution).len(), events.len());
    events
}

/// Waits until the execution's events include `wanted` ("kind STATE name").
fn wait_event(controller: &Controller, execution: &str, wanted: &str) {
    wait_for(
        &format!("event {wanted} of {execution}"),
        Duration::from_secs(30),
        || {
            summaries(&cli_events(controller, execution))
                .iter()
                .any(|s| s == wanted)
                .then_some(())
        },
    );
}

#[test]
fn stop_and_wait_and_abandon_produce_stopping_then_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let (controller, _agent) = start_with_agent(dir.path(), &[], 2);
    controller.create_pipeline(
        &Pipeline::new("waits")
            .build("Build", "Work", "sleep 2; echo built")
            .build("Ship", "Publish", "echo shipped")
            .write(dir.path()),
    );
    controller.create_pipeline(
        &Pipeline::new("abandons")
            .build("Build", "Work", "sleep 60; echo never")
            .build("Ship", "Publish", "echo shipped")
            .write(dir.path()),
    );

    // Stop and wait: the running action ends on its own, then the stage and the
    // pipeline stop; Ship never starts.
    let id = controller.start_pipeline("waits");
    wait_event(&controller, &id, "action STARTED Work");
    let stopping = controller.json(&["execution", "stop", &id, "--reason", "bad change"]);
    assert_eq!(stopping["status"], "Stopping", "{stopping:#}");
    let events = final_events(&controller, &id);
    assert_eq!(
        summaries(&events),
        sequence(
            &SOURCE_OK,
            &[
                "stage STARTED Build",
                "action STARTED Work",
                "pipeline STOPPING",
                "action SUCCEEDED Work",
                "stage STOPPED Build",
                "pipeline STOPPED",
            ]
        ),
        "{events:#?}"
    );
    let last = &events.last().unwrap()["detail"];
    assert_eq!(
        last["status-summary"],
        "Execution stopped by request: bad change"
    );
    assert_eq!(last["execution-type"], "STANDARD");
    assert!(last.get("rollback-metadata").is_none(), "{last:#}");

    // Abandon: the running action is abandoned at once.
    let id = controller.start_pipeline("abandons");
    wait_event(&controller, &id, "action STARTED Work");
    let stopped = controller.json(&["execution", "stop", &id, "--abandon", "--wait"]);
    assert_eq!(stopped["status"], "Stopped", "{stopped:#}");
    let events = final_events(&controller, &id);
    assert_eq!(
        summaries(&events),
        sequence(
            &SOURCE_OK,
            &[
                "stage STARTED Build",
                "action STARTED Work",
                "pipeline STOPPING",
                "action ABANDONED Work",
                "stage STOPPED Build",
                "pipeline STOPPED",
            ]
        ),
        "{events:#?}"
    );
    let abandoned = &events[8]["detail"];
    assert_eq!(
        abandoned["execution-result"]["external-execution-summary"],
        "abandoned: Execution abandoned by request"
    );
    assert!(abandoned["execution-result"].get("error-code").is_none());
}

#[test]
fn an_execution_superseded_while_waiting_ends_with_superseded() {
    let dir = tempfile::tempdir().unwrap();
    let (controller, _agent) = start_with_agent(dir.path(), &[], 4);
    controller.create_pipeline(
        &Pipeline::new("sup")
            .header("executionMode: SUPERSEDED")
            .build("Build", "Work", "sleep 3")
            .write(dir.path()),
    );

    let first = controller.start_pipeline("sup");
    wait_event(&controller, &first, "action STARTED Work");
    let second = controller.start_pipeline("sup");
    controller.wait_waiting(&second, "Build", Duration::from_secs(30));
    let third = controller.start_pipeline("sup");

    // The second one ends SUPERSEDED without a word about Build, which it never entered.
    let events = final_events(&controller, &second);
    assert_eq!(
        summaries(&events),
        sequence(&SOURCE_OK, &["pipeline SUPERSEDED"]),
        "{events:#?}"
    );
    assert!(
        events.iter().all(|e| e["detail"]["stage"] != "Build"),
        "{events:#?}"
    );
    assert_eq!(
        events[5]["detail"]["status-summary"],
        format!("Superseded by execution {third} while waiting in front of stage Build")
    );
    // The others run to the end as usual.
    let whole = |commands: &[&str]| sequence(&SOURCE_OK, commands);
    let build_ok = [
        "stage STARTED Build",
        "action STARTED Work",
        "action SUCCEEDED Work",
        "stage SUCCEEDED Build",
        "pipeline SUCCEEDED",
    ];
    for id in [&first, &third] {
        let events = final_events(&controller, id);
        assert_eq!(summaries(&events), whole(&build_ok), "{events:#?}");
    }
}

#[test]
fn approvals_start_then_succeed_or_fail_their_stage_and_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let (controller, _agent) = start_with_agent(dir.path(), &[], 2);
    let review = r#"  - name: Review
    actions:
      - name: Release
        actionTypeId: {category: Approval, owner: Sluice, provider: manual, version: "1"}
"#;
    controller.create_pipeline(
        &Pipeline::new("gate")
            .stage(review)
            .build("Ship", "Publish", "echo shipped")
            .write(dir.path()),
    );
    let decide = |verb: &str, id: &str| {
        wait_event(&controller, id, "action STARTED Release");
        ok(controller.cli().args([
            "execution",
            verb,
            id,
            "--stage",
            "Review",
            "--action",
            "Release",
            "--comment",
            "checked",
        ]));
    };

    let approved = controller.start_pipeline("gate");
    decide("approve", &approved);
    let events = final_events(&controller, &approved);
    assert_eq!(
        summaries(&events),
        sequence(
            &SOURCE_OK,
            &[
                "stage STARTED Review",
                "action STARTED Release",
                "action SUCCEEDED Release",
                "stage SUCCEEDED Review",
                "stage STARTED Ship",
                "action STARTED Publish",
                "action SUCCEEDED Publish",
                "stage SUCCEEDED Ship",
                "pipeline SUCCEEDED",
            ]
        ),
        "{events:#?}"
    );
    let release = &events[7]["detail"];
    assert_eq!(
        release["type"],
        serde_json::json!({"owner": "Sluice", "provider": "manual", "category": "Approval", "version": "1"})
    );
    assert!(
        release["execution-result"]["external-execution-summary"]
            .as_str()
            .unwrap()
            .ends_with(": checked"),
        "{release:#}"
    );

    let rejected = controller.start_pipeline("gate");
    decide("reject", &rejected);
    let events = final_events(&controller, &rejected);
    assert_eq!(
        summaries(&events),
        sequence(
            &SOURCE_OK,
            &[
                "stage STARTED Review",
                "action STARTED Release",
                "action FAILED Release",
                "stage FAILED Review",
                "pipeline FAILED",
            ]
        ),
        "{events:#?}"
    );
    let release = &events[7]["detail"]["execution-result"];
    assert_eq!(release["error-code"], "JobFailed");
    assert!(
        release["external-execution-summary"]
            .as_str()
            .unwrap()
            .starts_with("Rejected by "),
        "{release:#}"
    );
}

#[test]
fn a_rollback_execution_says_so_and_has_only_its_stage_events() {
    let dir = tempfile::tempdir().unwrap();
    let (controller, _agent) = start_with_agent(dir.path(), &[], 2);
    controller.create_pipeline(
        &Pipeline::new("shop")
            .build("Deploy", "Push", "echo deployed")
            .write(dir.path()),
    );
    let good = controller.start_pipeline("shop");
    assert_eq!(
        controller.wait_finished(&good, Duration::from_secs(60))["status"],
        "Succeeded"
    );

    let rollback = controller.json(&[
        "pipeline", "rollback", "shop", "--stage", "Deploy", "--target", &good, "--wait",
    ]);
    assert_eq!(rollback["status"], "Succeeded", "{rollback:#}");
    let id = rollback["id"].as_str().unwrap();
    let events = final_events(&controller, id);
    assert_eq!(
        summaries(&events),
        [
            "pipeline STARTED",
            "stage STARTED Deploy",
            "action STARTED Push",
            "action SUCCEEDED Push",
            "stage SUCCEEDED Deploy",
            "pipeline SUCCEEDED",
        ],
        "{events:#?}"
    );
    for event in [&events[0], &events[5]] {
        let detail = &event["detail"];
        assert_eq!(detail["execution-type"], "ROLLBACK", "{detail:#}");
        assert_eq!(
            detail["rollback-metadata"]["rollback-target-pipeline-execution-id"],
            good.as_str(),
            "{detail:#}"
        );
        assert_eq!(
            detail["execution-trigger"]["trigger-type"],
            "ManualRollback"
        );
    }
    // The execution it went back to is a plain one.
    let standard = cli_events(&controller, &good);
    assert_eq!(standard[0]["detail"]["execution-type"], "STANDARD");
    assert!(standard[0]["detail"].get("rollback-metadata").is_none());
}
