//! One agent session: the WebSocket an agent keeps open to the controller.
//!
//! The reader half turns frames into engine calls; the writer half drains the
//! session's queue (offers, acknowledgements) into the socket. A session with no frame
//! for three heartbeat intervals is closed, which catches half-open TCP connections long
//! before the kernel would.

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use sluice_proto::{AgentMessage, ControllerMessage};
use tokio::sync::mpsc;
use warp::ws::{Message, WebSocket};

use crate::engine::{Engine, Reply};
use crate::store::AgentRow;

/// Runs a session until the socket closes.
pub async fn run(
    engine: Arc<Engine>,
    ops: Arc<crate::ops::Ops>,
    agent: AgentRow,
    socket: WebSocket,
) {
    let (mut sink, mut stream) = socket.split();
    let settings = engine.settings().clone();
    let idle_limit = settings.heartbeat_interval * 3;

    // The first frame must be Hello.
    let hello = match tokio::time::timeout(idle_limit, stream.next()).await {
        Ok(Some(Ok(frame))) => frame
            .to_str()
            .ok()
            .and_then(|text| AgentMessage::decode(text).ok()),
        _ => None,
    };
    let Some(AgentMessage::Hello {
        protocol_min,
        protocol_max,
        agent_version,
        labels,
        capacity,
        running,
    }) = hello
    else {
        let refusal = ControllerMessage::Refused {
            message: "the first message of a session must be a valid hello".into(),
        };
        let _ = sink.send(Message::text(refusal.encode())).await;
        return;
    };
    let Some(protocol) = sluice_proto::negotiate(protocol_min, protocol_max) else {
        let refusal = ControllerMessage::Refused {
            message: format!(
                "agent speaks protocol {protocol_min}..={protocol_max}, this controller speaks {}..={}; upgrade the older side",
                sluice_proto::MIN_PROTOCOL_VERSION,
                sluice_proto::PROTOCOL_VERSION
            ),
        };
        let _ = sink.send(Message::text(refusal.encode())).await;
        return;
    };

    let (tx, mut rx) = mpsc::unbounded_channel::<ControllerMessage>();
    // Welcome goes first: connecting may dispatch offers into the queue at once.
    let _ = tx.send(ControllerMessage::Welcome {
        protocol,
        agent_id: agent.id.clone(),
        heartbeat_interval_ms: settings.heartbeat_interval.as_millis() as u64,
        lease_ttl_ms: settings.lease_ttl.as_millis() as u64,
    });
    let session_id = match engine.connect(
        &agent,
        labels,
        capacity,
        &agent_version,
        &running,
        tx.clone(),
    ) {
        Ok(id) => id,
        Err(e) => {
            // An internal error is not the agent's fault: close without a refusal so
            // that it reconnects and tries again.
            tracing::error!(agent = %agent.id, error = %e, "Could not register the agent session.");
            let _ = sink.close().await;
            return;
        }
    };

    // Pings keep an idle session alive on both ends (the agent also counts them as
    // signs of life) and find dead connections from this side.
    let ping_every = settings.heartbeat_interval;
    let writer = tokio::spawn(async move {
        let mut ticker = tokio::time::interval(ping_every);
        loop {
            let frame = tokio::select! {
                message = rx.recv() => match message {
                    Some(message) => Message::text(message.encode()),
                    None => break,
                },
                _ = ticker.tick() => Message::ping(Vec::new()),
            };
            if sink.send(frame).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });

    loop {
        let frame = match tokio::time::timeout(idle_limit, stream.next()).await {
            Err(_) => {
                tracing::warn!(agent = %agent.id, "No frame from the agent for {}s; closing its session.", idle_limit.as_secs());
                break;
            }
            Ok(None) | Ok(Some(Err(_))) => break,
            Ok(Some(Ok(frame))) => frame,
        };
        if frame.is_close() {
            break;
        }
        let Ok(text) = frame.to_str() else { continue };
        let message = match AgentMessage::decode(text) {
            Ok(message) => message,
            Err(e) => {
                tracing::warn!(agent = %agent.id, error = %e, "Ignoring a malformed message.");
                continue;
            }
        };
        let reply = match &message {
            AgentMessage::Hello { .. } => Ok(Reply::Nothing),
            AgentMessage::Heartbeat {
                running,
                plugin_cache,
            } => {
                if let Some(stats) = plugin_cache {
                    ops.plugin_cache_report(&agent.id, *stats);
                }
                engine
                    .heartbeat(&agent.id, running)
                    .map(|()| Reply::Nothing)
            }
            AgentMessage::Accept(attempt) => engine.accept(&agent.id, attempt),
            AgentMessage::Reject { attempt, reason } => engine
                .reject(&agent.id, attempt, reason)
                .map(|()| Reply::Nothing),
            AgentMessage::Log {
                attempt,
                offset,
                data,
            } => engine.log(&agent.id, attempt, *offset, data),
            AgentMessage::Finished {
                attempt,
                outcome,
                log_length,
                log_sha256,
                tests,
            } => engine.finished(&agent.id, attempt, outcome, *log_length, log_sha256, tests),
            AgentMessage::CheckResult { check_id, result } => {
                engine.check_result(check_id, result.clone());
                Ok(Reply::Nothing)
            }
        };
        match reply {
            Ok(Reply::Send(message)) => {
                let _ = tx.send(message);
            }
            Ok(Reply::Nothing) => {}
            Err(e) => {
                tracing::error!(agent = %agent.id, error = %e, "Could not apply an agent report.");
                // A lost result must be sent again: closing the session makes the agent
                // reconnect and resend everything it has not had acknowledged.
                if matches!(message, AgentMessage::Finished { .. }) {
                    break;
                }
            }
        }
    }
    drop(tx);
    if let Err(e) = engine.disconnect(&agent.id, session_id) {
        tracing::error!(agent = %agent.id, error = %e, "Could not record the agent's disconnection.");
    }
    writer.abort();
}
