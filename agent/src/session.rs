//! The agent's session with the controller: connect over mutually authenticated TLS,
//! say Hello, heartbeat, take offers, run them, report, and reconnect with jittered
//! backoff when the connection drops.
//!
//! Attempts keep running while the connection is down. Their `Finished` reports stay
//! in an outbox until the controller acknowledges them, and are sent again after a
//! reconnect; the Hello of a new session lists every attempt still held so the
//! controller can resume them instead of declaring them lost.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use sluice_proto::{AgentMessage, AttemptRef, ControllerMessage, Job};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{ClientError, StateDir};
use crate::executor::Executor;
use crate::plugin_host::{PluginError, PluginHost};

/// How to run an agent.
#[derive(Debug, Clone)]
pub struct Options {
    /// The state dir written by `join`.
    pub state_dir: PathBuf,
    /// How many actions to run at once.
    pub capacity: u32,
    /// Labels added to those recorded at join.
    pub extra_labels: BTreeMap<String, String>,
    /// Cap on one attempt's log, in bytes.
    pub max_log_bytes: u64,
    /// Where compiled plugins are kept; `None`: `plugin-cache` in the state dir.
    pub plugin_cache: Option<PathBuf>,
}

/// Why an agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The state dir is not usable.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The plugin host could not start.
    #[error("plugin host: {0}")]
    Plugins(#[from] PluginError),
    /// The controller refused this agent; retrying would not help.
    #[error("{0}")]
    Refused(String),
}

/// One connection attempt's end.
enum Ended {
    /// Try again after a pause.
    Retry(String),
    /// Give up.
    Fatal(String),
}

struct Running {
    attempt: AttemptRef,
    task: tokio::task::JoinHandle<()>,
}

struct Shared {
    capacity: usize,
    running: Mutex<HashMap<i64, Running>>,
    /// Finished reports not yet acknowledged.
    outbox: Mutex<HashMap<i64, AgentMessage>>,
    out_tx: mpsc::UnboundedSender<AgentMessage>,
    out_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<AgentMessage>>,
    executor: Executor,
    /// Source checks (polling) run outside the job capacity, at most this many at once.
    checks: Arc<tokio::sync::Semaphore>,
}

/// How many source checks an agent runs at once.
const MAX_CHECKS: usize = 2;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs the agent until the controller refuses it for good.
pub async fn run(options: Options) -> Result<(), AgentError> {
    let state = StateDir::new(&options.state_dir);
    if !state.is_joined() {
        return Err(AgentError::Refused(format!(
            "{} holds no agent identity; run `sluice-agent join --controller URL --token TOKEN --ca-fingerprint SHA256 --state-dir {}` first",
            options.state_dir.display(),
            options.state_dir.display()
        )));
    }
    let identity = state.identity()?;
    let cache_dir = options
        .plugin_cache
        .clone()
        .unwrap_or_else(|| options.state_dir.join("plugin-cache"));
    let host = tokio::task::spawn_blocking(move || -> Result<PluginHost, PluginError> {
        let mut host = PluginHost::new(&cache_dir)?;
        host.load_builtins()?;
        Ok(host)
    })
    .await
    .map_err(|e| AgentError::Refused(format!("plugin loading panicked: {e}")))??;
    let work_dir = options.state_dir.join("work");
    let _ = std::fs::remove_dir_all(&work_dir);
    std::fs::create_dir_all(&work_dir).map_err(|source| ClientError::Io {
        path: work_dir.clone(),
        source,
    })?;
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        capacity: options.capacity.max(1) as usize,
        running: Mutex::new(HashMap::new()),
        outbox: Mutex::new(HashMap::new()),
        out_tx,
        out_rx: tokio::sync::Mutex::new(out_rx),
        executor: Executor::new(
            Arc::new(host),
            state.http_client()?,
            identity.controller_url.clone(),
            work_dir,
        )
        .with_max_log_bytes(options.max_log_bytes),
        checks: Arc::new(tokio::sync::Semaphore::new(MAX_CHECKS)),
    });
    let mut labels = identity.labels.clone();
    labels.extend(options.extra_labels.clone());

    let mut failures = 0u32;
    loop {
        match connect_once(
            &state,
            &identity.controller_url,
            &labels,
            &shared,
            &mut failures,
        )
        .await
        {
            Ended::Fatal(message) => return Err(AgentError::Refused(message)),
            Ended::Retry(message) => {
                failures += 1;
                // Full jitter, base 0.5 s, doubling, capped at 30 s: a fleet that lost
                // its controller does not come back in one stampede.
                let cap = Duration::from_millis(500u64.saturating_mul(1 << failures.min(6)))
                    .min(Duration::from_secs(30));
                let pause = cap
                    .mul_f64(rand::random::<f64>())
                    .max(Duration::from_millis(100));
                tracing::warn!(reason = %message, retry_in_ms = pause.as_millis() as u64, "Disconnected from the controller.");
                tokio::time::sleep(pause).await;
            }
        }
    }
}

fn held_attempts(shared: &Shared) -> Vec<AttemptRef> {
    let mut held: Vec<AttemptRef> = lock(&shared.running)
        .values()
        .map(|r| r.attempt.clone())
        .collect();
    for message in lock(&shared.outbox).values() {
        if let AgentMessage::Finished { attempt, .. } = message
            && !held.iter().any(|h| h.attempt_id == attempt.attempt_id)
        {
            held.push(attempt.clone());
        }
    }
    held
}

async fn connect_once(
    state: &StateDir,
    controller_url: &str,
    labels: &BTreeMap<String, String>,
    shared: &Arc<Shared>,
    failures: &mut u32,
) -> Ended {
    let tls = match state.tls_config() {
        Ok(tls) => tls,
        Err(e) => return Ended::Fatal(e.to_string()),
    };
    let Some(authority) = controller_url.strip_prefix("https://") else {
        return Ended::Fatal(format!(
            "controller URL {controller_url} must start with https://"
        ));
    };
    let authority = authority.trim_end_matches('/').to_string();
    let host = authority
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(&authority)
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let address = if authority.contains(':') {
        authority.clone()
    } else {
        format!("{authority}:443")
    };
    let tcp = match tokio::net::TcpStream::connect(&address).await {
        Ok(tcp) => tcp,
        Err(e) => return Ended::Retry(format!("cannot connect to {address}: {e}")),
    };
    let _ = tcp.set_nodelay(true);
    let server_name = match rustls::pki_types::ServerName::try_from(host.clone()) {
        Ok(name) => name,
        Err(e) => return Ended::Fatal(format!("bad controller host {host}: {e}")),
    };
    let tls_stream = match tokio_rustls::TlsConnector::from(tls)
        .connect(server_name, tcp)
        .await
    {
        Ok(s) => s,
        Err(e) => return classify_tls_error(&e.to_string()),
    };
    let url = format!("wss://{authority}{}", sluice_proto::CONNECT_PATH);
    let (socket, _) = match tokio_tungstenite::client_async(url.as_str(), tls_stream).await {
        Ok(pair) => pair,
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let status = response.status();
            let body = response
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).to_string())
                .unwrap_or_default();
            let message = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| {
                    v.get("message")
                        .and_then(|m| m.as_str())
                        .map(str::to_string)
                })
                .unwrap_or(body);
            if status.as_u16() == 401 || status.as_u16() == 403 {
                return Ended::Fatal(format!("the controller refused this agent: {message}"));
            }
            return Ended::Retry(format!(
                "session request failed with HTTP {status}: {message}"
            ));
        }
        Err(e) => return classify_tls_error(&e.to_string()),
    };
    let (mut sink, mut stream) = socket.split();

    let hello = AgentMessage::Hello {
        protocol_min: sluice_proto::MIN_PROTOCOL_VERSION,
        protocol_max: sluice_proto::PROTOCOL_VERSION,
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        labels: labels.clone(),
        capacity: shared.capacity as u32,
        running: held_attempts(shared),
    };
    if let Err(e) = sink.send(Message::text(hello.encode())).await {
        return Ended::Retry(format!("sending hello: {e}"));
    }
    let heartbeat_every = match tokio::time::timeout(Duration::from_secs(15), stream.next()).await {
        Ok(Some(Ok(Message::Text(text)))) => match ControllerMessage::decode(&text) {
            Ok(ControllerMessage::Welcome {
                heartbeat_interval_ms,
                agent_id,
                protocol,
                ..
            }) => {
                tracing::info!(agent = %agent_id, protocol, "Connected to the controller.");
                Duration::from_millis(heartbeat_interval_ms.max(100))
            }
            Ok(ControllerMessage::Refused { message }) => {
                return Ended::Fatal(format!("the controller refused this agent: {message}"));
            }
            other => return Ended::Retry(format!("expected welcome, got {other:?}")),
        },
        Ok(Some(Err(e))) => return classify_tls_error(&e.to_string()),
        Ok(other) => return Ended::Retry(format!("expected welcome, got {other:?}")),
        Err(_) => return Ended::Retry("no welcome from the controller within 15 s".into()),
    };
    *failures = 0;

    // Reports the controller has not acknowledged go first.
    for message in lock(&shared.outbox).values() {
        let _ = shared.out_tx.send(message.clone());
    }

    let writer_shared = shared.clone();
    let mut writer = tokio::spawn(async move {
        let mut rx = writer_shared.out_rx.lock().await;
        let mut ticker = tokio::time::interval(heartbeat_every);
        loop {
            let message = tokio::select! {
                message = rx.recv() => match message { Some(m) => m, None => break },
                _ = ticker.tick() => AgentMessage::Heartbeat {
                    running: held_attempts(&writer_shared),
                    plugin_cache: Some(writer_shared.executor.plugin_cache_stats()),
                },
            };
            if let Err(e) = sink.send(Message::text(message.encode())).await {
                return format!("sending to the controller: {e}");
            }
        }
        "agent shutting down".to_string()
    });

    let idle_limit = heartbeat_every * 3;
    let ended = loop {
        let frame = tokio::select! {
            frame = tokio::time::timeout(idle_limit, stream.next()) => frame,
            result = &mut writer => break Ended::Retry(result.unwrap_or_else(|e| e.to_string())),
        };
        let text = match frame {
            Err(_) => {
                break Ended::Retry(format!(
                    "no message from the controller for {}s",
                    idle_limit.as_secs()
                ));
            }
            Ok(None) => break Ended::Retry("the controller closed the session".into()),
            Ok(Some(Err(e))) => break Ended::Retry(e.to_string()),
            Ok(Some(Ok(Message::Text(text)))) => text,
            Ok(Some(Ok(Message::Close(_)))) => {
                break Ended::Retry("the controller closed the session".into());
            }
            Ok(Some(Ok(_))) => continue,
        };
        match ControllerMessage::decode(&text) {
            Ok(message) => handle(shared, message),
            Err(e) => {
                tracing::warn!(error = %e, "Ignoring a malformed message from the controller.")
            }
        }
    };
    writer.abort();
    ended
}

fn classify_tls_error(error: &str) -> Ended {
    let lower = error.to_ascii_lowercase();
    if lower.contains("unknownca")
        || lower.contains("badcertificate")
        || lower.contains("certificaterequired")
        || lower.contains("decrypterror")
    {
        Ended::Fatal(format!(
            "the controller refused this agent's certificate ({error}): it was not issued by this controller's CA. \
             Join again with `sluice-agent join` and a new token"
        ))
    } else if lower.contains("invalid peer certificate") {
        Ended::Fatal(format!(
            "the controller's certificate is not signed by the CA this agent trusts ({error}); \
             check the controller URL or join again"
        ))
    } else {
        Ended::Retry(error.to_string())
    }
}

fn handle(shared: &Arc<Shared>, message: ControllerMessage) {
    match message {
        ControllerMessage::Offer(job) => offer(shared, *job),
        ControllerMessage::FinishAck { attempt_id } => {
            lock(&shared.outbox).remove(&attempt_id);
        }
        ControllerMessage::Stale {
            attempt_id,
            message,
        } => {
            tracing::warn!(attempt = attempt_id, message = %message, "Controller says an attempt is stale; dropping it.");
            lock(&shared.outbox).remove(&attempt_id);
            if let Some(running) = lock(&shared.running).remove(&attempt_id) {
                running.task.abort();
            }
        }
        ControllerMessage::Cancel { attempt_id, reason } => {
            tracing::warn!(attempt = attempt_id, reason = %reason, "Cancelling an attempt.");
            if let Some(running) = lock(&shared.running).remove(&attempt_id) {
                // Dropping the task's future kills the plugin and its process group.
                running.task.abort();
                let finished = AgentMessage::Finished {
                    attempt: running.attempt,
                    outcome: sluice_proto::Outcome::Failed {
                        message: format!("cancelled: {reason}"),
                    },
                    log_length: 0,
                    log_sha256: String::new(),
                    tests: Vec::new(),
                };
                lock(&shared.outbox).insert(attempt_id, finished.clone());
                let _ = shared.out_tx.send(finished);
            }
        }
        ControllerMessage::Check(job) => check(shared, *job),
        ControllerMessage::LogAck { .. } => {}
        ControllerMessage::Welcome { .. } | ControllerMessage::Refused { .. } => {}
    }
}

fn offer(shared: &Arc<Shared>, job: Job) {
    let attempt = job.attempt.clone();
    let mut running = lock(&shared.running);
    if running.contains_key(&attempt.attempt_id) {
        return;
    }
    if running.len() >= shared.capacity {
        let _ = shared.out_tx.send(AgentMessage::Reject {
            attempt,
            reason: format!("agent is at capacity ({} running)", running.len()),
        });
        return;
    }
    let _ = shared.out_tx.send(AgentMessage::Accept(attempt.clone()));
    let task_shared = shared.clone();
    let id = attempt.attempt_id;
    let task = tokio::spawn(async move {
        tracing::info!(attempt = id, stage = %job.stage, action = %job.action, "Running action.");
        let finished = task_shared
            .executor
            .run(job, task_shared.out_tx.clone())
            .await;
        if let AgentMessage::Finished { outcome, .. } = &finished {
            tracing::info!(attempt = id, result = %crate::executor::describe(outcome), "Action finished.");
        }
        lock(&task_shared.outbox).insert(id, finished.clone());
        lock(&task_shared.running).remove(&id);
        let _ = task_shared.out_tx.send(finished);
    });
    running.insert(id, Running { attempt, task });
}

/// Runs a source check in the background; it waits for one of the [`MAX_CHECKS`] slots
/// (the controller gives up on an answer that takes too long).
fn check(shared: &Arc<Shared>, job: sluice_proto::CheckJob) {
    let shared = shared.clone();
    tokio::spawn(async move {
        let Ok(_slot) = shared.checks.clone().acquire_owned().await else {
            return;
        };
        tracing::debug!(pipeline = %job.pipeline, action = %job.action, "Checking a source for new revisions.");
        let result = shared.executor.check(job).await;
        let _ = shared.out_tx.send(result);
    });
}
