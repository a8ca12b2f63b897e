//! State-change events: every change of an execution, a stage execution or an action
//! execution becomes an event with CodePipeline's EventBridge detail-types and states,
//! recorded in SQLite with a monotonically increasing id, streamed to clients as
//! Server-Sent Events and POSTed to the operator's webhooks.
//!
//! - The **recorder** ([`run_recorder`]) listens to the engine's broadcast. On each
//!   `Event::Execution(id)` it reads the execution, its stages and attempts in one
//!   snapshot and compares them with the last state recorded for each of them (the
//!   newest event of each entity, kept in the `events` table itself). Every difference
//!   becomes one or more events, written in one transaction. Changes it did not see
//!   (several at once, a restart, a lagged broadcast) are filled in: an action that
//!   started and finished in between gets STARTED then its result. At start, and after
//!   the broadcast lagged, it compares every execution whose recorded state differs
//!   from its status, and every one in progress.
//! - **Order**: within one execution, events follow the causal order: the pipeline's
//!   STARTED / RESUMED / STOPPING, then stage by stage its STARTED / RESUMED, its
//!   actions' events by time, its end; the pipeline's end last.
//! - **Delivery**: [`sse_reply`] streams `GET /api/v1/events` (resumable with
//!   `Last-Event-ID` or `since`), and [`run_webhook`] POSTs each event to a webhook,
//!   in order, at least once, with exponential backoff, its cursor kept in SQLite. An
//!   event the webhook refuses for good (a 4xx other than 408, 425 and 429) is sent
//!   again at most 5 times, then skipped with a warning and recorded as the webhook's
//!   last error, so that one bad event does not hold up the ones after it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use sluice_pipeline::Pipeline;
use tokio::sync::{broadcast, mpsc, watch};
use warp::Reply;
use warp::http::StatusCode;
use warp::reply::Response;

use crate::engine::{Engine, Event};
use crate::store::{
    AttemptRow, EventRow, ExecutionRow, NewEvent, RecordedState, StageRow, Store, StoreError,
    now_ms,
};

/// detail-type of pipeline execution events.
pub const PIPELINE_DETAIL_TYPE: &str = "CodePipeline Pipeline Execution State Change";
/// detail-type of stage execution events.
pub const STAGE_DETAIL_TYPE: &str = "CodePipeline Stage Execution State Change";
/// detail-type of action execution events.
pub const ACTION_DETAIL_TYPE: &str = "CodePipeline Action Execution State Change";
/// The `source` of every event.
pub const SOURCE: &str = "sluice";

/// How many events an SSE stream or a webhook reads from the store at a time.
const PAGE: i64 = 500;
/// Executions the recorder keeps its recorded state of in memory.
const CACHE_LIMIT: usize = 10_000;
/// The first and the longest pause between deliveries to a webhook that fails.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// Errors setting up event delivery.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    /// A webhook URL given to the controller is unusable.
    #[error("--event-webhook {url}: {message}")]
    Webhook {
        /// The URL as given.
        url: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// The HTTP client for webhooks could not be built.
    #[error("cannot build the HTTPS client for event webhooks: {0}")]
    Client(String),
    /// The store failed.
    #[error("cannot read events: {0}")]
    Store(#[from] StoreError),
}

/// Tells SSE streams and webhooks that events up to an id were recorded.
pub struct EventHub {
    latest: watch::Sender<i64>,
}

impl EventHub {
    /// A hub whose newest event is `last_id`.
    pub fn new(last_id: i64) -> EventHub {
        EventHub {
            latest: watch::channel(last_id).0,
        }
    }

    /// Wakes up whenever more events were recorded.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.latest.subscribe()
    }

    fn recorded(&self, last_id: i64) {
        self.latest.send_if_modified(|latest| {
            let newer = last_id > *latest;
            if newer {
                *latest = last_id;
            }
            newer
        });
    }
}

// ---- states -------------------------------------------------------------------------

/// CodePipeline's event state for a stored status: InProgress is STARTED, Cancelled is
/// spelled CANCELED, the rest is the status in capitals.
fn event_state(status: &str) -> String {
    match status {
        "InProgress" => "STARTED".to_string(),
        "Cancelled" | "Canceled" => "CANCELED".to_string(),
        other => other.to_ascii_uppercase(),
    }
}

fn is_open(state: &str) -> bool {
    matches!(state, "STARTED" | "RESUMED" | "STOPPING")
}

/// The states to record for a pipeline or stage execution: `opening` ones come before
/// its children's events, `closing` ones after. `recorded` is the last recorded state
/// and generation (stage retries), `current` the state now.
fn lifecycle(
    recorded: Option<&(String, i64)>,
    current: &str,
    generation: i64,
    stopping_before_stopped: bool,
) -> (Vec<&'static str>, Vec<String>) {
    let mut opening = Vec::new();
    let mut closing = Vec::new();
    let (mut last, recorded_generation) = match recorded {
        Some((state, generation)) => (state.as_str(), *generation),
        None => {
            opening.push("STARTED");
            ("STARTED", generation)
        }
    };
    if generation > recorded_generation {
        // Retried since: the end in between was recorded already, or is lost for good.
        opening.push("RESUMED");
        last = "RESUMED";
    }
    match current {
        "STARTED" => {}
        "STOPPING" if last != "STOPPING" => opening.push("STOPPING"),
        "STOPPING" => {}
        end if end != last => {
            // Our stops always pass through Stopping; say so even if it was missed.
            if stopping_before_stopped && end == "STOPPED" && last != "STOPPING" {
                opening.push("STOPPING");
            }
            closing.push(end.to_string());
        }
        _ => {}
    }
    (opening, closing)
}

/// What was recorded last for each entity of one execution.
#[derive(Debug, Default, Clone)]
struct Recorded {
    pipeline: Option<(String, i64)>,
    stages: HashMap<i64, (String, i64)>,
    attempts: HashMap<i64, String>,
}

impl Recorded {
    fn from_rows(rows: Vec<RecordedState>) -> Recorded {
        let mut recorded = Recorded::default();
        for row in rows {
            recorded.set(&row.entity, row.state, row.generation);
        }
        recorded
    }

    fn set(&mut self, entity: &str, state: String, generation: i64) {
        if entity == "pipeline" {
            self.pipeline = Some((state, generation));
        } else if let Some(index) = entity.strip_prefix("stage:").and_then(|i| i.parse().ok()) {
            self.stages.insert(index, (state, generation));
        } else if let Some(id) = entity.strip_prefix("attempt:").and_then(|i| i.parse().ok()) {
            self.attempts.insert(id, state);
        }
    }

    fn apply(&mut self, events: &[NewEvent]) {
        for e in events {
            self.set(&e.entity, e.state.clone(), e.generation);
        }
    }
}

/// The events that take an execution from what was recorded to its state now.
fn changes(
    recorded: &Recorded,
    execution: &ExecutionRow,
    stages: &[StageRow],
    attempts: &[AttemptRow],
    definition: Option<&Pipeline>,
    now: i64,
) -> Vec<NewEvent> {
    let base =
        |entity: String, detail_type: &str, state: &str, generation: i64, time_ms, detail| {
            NewEvent {
                time_ms,
                detail_type: detail_type.to_string(),
                pipeline_name: execution.pipeline_name.clone(),
                execution_id: execution.id.clone(),
                entity,
                state: state.to_string(),
                generation,
                detail,
            }
        };
    let common = |state: &str| {
        json!({
            "pipeline": execution.pipeline_name,
            "version": execution.pipeline_version,
            "execution-id": execution.id,
            "state": state,
        })
    };
    let mut out = Vec::new();

    // The pipeline execution.
    let generation: i64 = stages.iter().map(|s| s.retries).sum();
    let (opening, closing) = lifecycle(
        recorded.pipeline.as_ref(),
        &event_state(&execution.status),
        generation,
        true,
    );
    let pipeline_event = |state: &str| {
        let mut detail = common(state);
        detail["execution-trigger"] = json!({
            "trigger-type": execution.trigger_type,
            "trigger-detail": execution.trigger_detail,
        });
        detail["pipeline-execution-attempt"] = json!(generation + 1);
        detail["execution-type"] = json!(execution.execution_type);
        if let Some(target) = &execution.rollback_target {
            detail["rollback-metadata"] =
                json!({ "rollback-target-pipeline-execution-id": target });
        }
        if !matches!(state, "STARTED" | "RESUMED")
            && let Some(summary) = &execution.status_summary
        {
            detail["status-summary"] = json!(summary);
        }
        let time = match state {
            "STARTED" => execution.started_at_ms,
            "RESUMED" | "STOPPING" => now,
            _ => execution.finished_at_ms.unwrap_or(now),
        };
        base(
            "pipeline".into(),
            PIPELINE_DETAIL_TYPE,
            state,
            generation,
            time,
            detail.to_string(),
        )
    };
    for state in opening {
        out.push(pipeline_event(state));
    }

    // Stage by stage (they run one after the other).
    let mut indexes: Vec<i64> = stages
        .iter()
        .map(|s| s.stage_index)
        .chain(attempts.iter().map(|a| a.stage_index))
        .collect();
    indexes.sort_unstable();
    indexes.dedup();
    for index in indexes {
        let row = stages.iter().find(|s| s.stage_index == index);
        let stage_def = definition.and_then(|d| d.stages.get(index as usize));
        let stage_name = row
            .map(|r| r.stage_name.clone())
            .or_else(|| stage_def.map(|s| s.name.clone()))
            .unwrap_or_else(|| format!("stage {index}"));
        let mut closing_stage = Vec::new();
        if let Some(row) = row {
            let (opening, closing) = lifecycle(
                recorded.stages.get(&index),
                &event_state(&row.status),
                row.retries,
                false,
            );
            let stage_event = |state: &str| {
                let mut detail = common(state);
                detail["stage"] = json!(stage_name);
                let time = match state {
                    "STARTED" => row.started_at_ms.unwrap_or(now),
                    "RESUMED" | "STOPPING" => now,
                    _ => row.finished_at_ms.unwrap_or(now),
                };
                base(
                    format!("stage:{index}"),
                    STAGE_DETAIL_TYPE,
                    state,
                    row.retries,
                    time,
                    detail.to_string(),
                )
            };
            out.extend(opening.into_iter().map(&stage_event));
            closing_stage.extend(closing.iter().map(|s| stage_event(s)));
        }

        // Its action executions, one per attempt, by time.
        let mut pending: Vec<(i64, u8, i64, NewEvent)> = Vec::new();
        // Commands rule runs belong to conditions, which CodePipeline's events do not
        // carry; the execution's stages show them.
        for attempt in attempts
            .iter()
            .filter(|a| a.stage_index == index && a.rule_condition.is_none())
        {
            let last = recorded.attempts.get(&attempt.id).map(String::as_str);
            let finished = attempt.phase == crate::store::phase::DONE;
            let started = attempt.started_at_ms.is_some();
            let action_def =
                stage_def.and_then(|s| s.actions.iter().find(|a| a.name == attempt.action_name));
            let action_event = |state: &str| {
                let mut detail = common(state);
                detail["stage"] = json!(stage_name);
                detail["action"] = json!(attempt.action_name);
                if let Some(action) = action_def {
                    let t = &action.action_type_id;
                    detail["type"] = json!({
                        "owner": t.owner,
                        "provider": t.provider,
                        "category": t.category.to_string(),
                        "version": t.version,
                    });
                }
                detail["attempt"] = json!(attempt.attempt);
                detail["attempt-id"] = json!(attempt.id);
                if state != "STARTED" {
                    let mut result = json!({});
                    if let Some(summary) = attempt.summary.as_ref().or(attempt.error.as_ref()) {
                        result["external-execution-summary"] = json!(summary);
                    }
                    if state == "FAILED" {
                        result["error-code"] = json!("JobFailed");
                    }
                    detail["execution-result"] = result;
                }
                detail.to_string()
            };
            if started && last.is_none() {
                let time = attempt.started_at_ms.unwrap_or(now);
                pending.push((
                    time,
                    1,
                    attempt.id,
                    base(
                        format!("attempt:{}", attempt.id),
                        ACTION_DETAIL_TYPE,
                        "STARTED",
                        0,
                        time,
                        action_event("STARTED"),
                    ),
                ));
            }
            if finished && last.is_none_or(is_open) {
                let state = event_state(&attempt.status);
                let time = attempt.finished_at_ms.unwrap_or(now);
                pending.push((
                    time,
                    0,
                    attempt.id,
                    base(
                        format!("attempt:{}", attempt.id),
                        ACTION_DETAIL_TYPE,
                        &state,
                        0,
                        time,
                        action_event(&state),
                    ),
                ));
            }
        }
        // By time; within a millisecond ends before starts (the next runOrder starts
        // once the previous one ended), but an attempt's own start before its end.
        pending.sort_by_key(|(time, rank, id, _)| (*time, *rank, *id));
        let mut started_early: HashSet<i64> = HashSet::new();
        let starts: HashMap<i64, NewEvent> = pending
            .iter()
            .filter(|(_, rank, _, _)| *rank == 1)
            .map(|(_, _, id, e)| (*id, e.clone()))
            .collect();
        for (_, rank, id, event) in pending {
            if rank == 0 {
                if let Some(start) = starts.get(&id)
                    && started_early.insert(id)
                {
                    out.push(start.clone());
                }
                out.push(event);
            } else if started_early.insert(id) {
                out.push(event);
            }
        }
        out.extend(closing_stage);
    }

    for state in closing {
        out.push(pipeline_event(&state));
    }
    out
}

// ---- the recorder ---------------------------------------------------------------------

struct Recorder {
    store: Arc<Store>,
    hub: Arc<EventHub>,
    baseline: i64,
    recorded: HashMap<String, Recorded>,
    definitions: HashMap<(String, i64), Option<Arc<Pipeline>>>,
}

impl Recorder {
    fn definition(&mut self, name: &str, version: i64) -> Option<Arc<Pipeline>> {
        let key = (name.to_string(), version);
        if let Some(def) = self.definitions.get(&key) {
            return def.clone();
        }
        let parsed = match self.store.pipeline_version(name, Some(version)) {
            Ok(stored) => {
                match sluice_pipeline::parse(
                    &stored.definition,
                    Some(sluice_pipeline::Format::Json),
                ) {
                    Ok(parsed) => Some(Arc::new(parsed.pipeline)),
                    Err(e) => {
                        tracing::warn!(pipeline = name, version, error = %e, "Stored definition unreadable; action events go without their type.");
                        None
                    }
                }
            }
            Err(e) => {
                tracing::warn!(pipeline = name, version, error = %e, "Cannot read a pipeline definition; action events go without their type.");
                return None;
            }
        };
        self.definitions.insert(key, parsed.clone());
        parsed
    }

    /// Records what changed in one execution since it was last looked at.
    fn record(&mut self, execution_id: &str) -> Result<(), StoreError> {
        let Some(snapshot) = self.store.event_snapshot(execution_id)? else {
            return Ok(());
        };
        let (execution, stages, attempts) =
            (snapshot.execution, snapshot.stages, snapshot.attempts);
        if execution.seq <= self.baseline {
            return Ok(());
        }
        let definition = self.definition(&execution.pipeline_name, execution.pipeline_version);
        if !self.recorded.contains_key(execution_id) {
            if self.recorded.len() >= CACHE_LIMIT {
                self.recorded.clear();
            }
            let rows = self.store.recorded_states(execution_id)?;
            self.recorded
                .insert(execution_id.to_string(), Recorded::from_rows(rows));
        }
        let recorded = self.recorded.get(execution_id).cloned().unwrap_or_default();
        let events = changes(
            &recorded,
            &execution,
            &stages,
            &attempts,
            definition.as_deref(),
            now_ms(),
        );
        if !events.is_empty() {
            let last = self.store.insert_events(&events)?;
            if let Some(entry) = self.recorded.get_mut(execution_id) {
                entry.apply(&events);
            }
            self.hub.recorded(last);
        }
        // An execution that has ended changes again only if retried: its recorded state
        // is read back from the store then.
        if !matches!(execution.status.as_str(), "InProgress" | "Stopping") {
            self.recorded.remove(execution_id);
        }
        Ok(())
    }

    /// Records every execution whose recorded state may be behind: those in progress
    /// and those whose status differs from the last recorded one.
    fn scan(&mut self) -> Result<(), StoreError> {
        for row in self.store.event_scan()? {
            let current = event_state(&row.status);
            let behind = matches!(row.status.as_str(), "InProgress" | "Stopping")
                || row.recorded.as_ref().is_none_or(|(state, generation)| {
                    *state != current || *generation != row.generation
                });
            if behind {
                self.record(&row.id)?;
            }
        }
        Ok(())
    }
}

/// Records events until the engine goes away. Subscribes before its first scan, so that
/// nothing that changes meanwhile is missed.
pub async fn run_recorder(engine: Arc<Engine>, hub: Arc<EventHub>) {
    let mut events = engine.subscribe();
    let store = engine.store().clone();
    let baseline = loop {
        match store.events_baseline() {
            Ok(baseline) => break baseline,
            Err(e) => {
                tracing::error!(error = %e, "Cannot read the events baseline; retrying in 5s.");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    };
    let mut recorder = Recorder {
        store,
        hub,
        baseline,
        recorded: HashMap::new(),
        definitions: HashMap::new(),
    };
    let mut rescan = true;
    loop {
        if rescan {
            match recorder.scan() {
                Ok(()) => rescan = false,
                Err(e) => {
                    tracing::error!(error = %e, "Recording events failed; trying again in 5s.");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    continue;
                }
            }
        }
        // Take everything already waiting, so a burst on one execution is read once.
        let mut changed: Vec<String> = Vec::new();
        let first = events.recv().await;
        let mut next = Some(first);
        while let Some(received) = next.take() {
            match received {
                Ok(Event::Execution(id)) => {
                    if !changed.contains(&id) {
                        changed.push(id);
                    }
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(
                        missed,
                        "The event recorder fell behind; comparing every execution again."
                    );
                    rescan = true;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
            next = match events.try_recv() {
                Ok(event) => Some(Ok(event)),
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    Some(Err(broadcast::error::RecvError::Lagged(n)))
                }
                Err(_) => None,
            };
        }
        if rescan {
            continue;
        }
        for id in changed {
            if let Err(e) = recorder.record(&id) {
                tracing::error!(execution = %id, error = %e, "Recording events failed; comparing every execution again.");
                rescan = true;
            }
        }
    }
}

// ---- reading events ---------------------------------------------------------------------

/// The JSON of an event, as streamed and POSTed: EventBridge's envelope with our
/// integer id.
pub fn envelope(row: &EventRow) -> Value {
    let detail: Value = serde_json::from_str(&row.event.detail).unwrap_or(Value::Null);
    let time = std::time::UNIX_EPOCH + Duration::from_millis(row.event.time_ms.max(0) as u64);
    json!({
        "version": "0",
        "id": row.id,
        "detail-type": row.event.detail_type,
        "source": SOURCE,
        "time": humantime::format_rfc3339_millis(time).to_string(),
        "detail": detail,
    })
}

/// Query of `GET /api/v1/events`.
#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    /// Events after this id.
    pub since: Option<i64>,
    /// Only this pipeline's.
    pub pipeline: Option<String>,
    /// Only this execution's.
    pub execution: Option<String>,
    /// false: end the stream once every event recorded so far was sent.
    pub follow: Option<bool>,
}

fn bad_request(message: String) -> Response {
    warp::reply::with_status(
        warp::reply::json(&json!({"code": "bad_request", "message": message})),
        StatusCode::BAD_REQUEST,
    )
    .into_response()
}

/// `GET /api/v1/events`: Server-Sent Events from `Last-Event-ID` (a reconnecting
/// client) or else `since`, each with `id:` (the event id), `event:` (the detail-type)
/// and `data:` (the JSON of [`envelope`]); a keep-alive comment every 15 s.
pub fn sse_reply(
    store: Arc<Store>,
    hub: Arc<EventHub>,
    query: EventsQuery,
    last_event_id: Option<String>,
) -> Response {
    let start = match last_event_id.as_deref().map(str::trim) {
        Some(id) if !id.is_empty() => match id.parse::<i64>() {
            Ok(id) => id,
            Err(_) => {
                return bad_request(format!(
                    "Last-Event-ID: {id:?} is not an event id; send the id: of the last event received"
                ));
            }
        },
        _ => query.since.unwrap_or(0),
    };
    if start < 0 {
        return bad_request(format!(
            "since: {start} is not an event id; ids start at 1 (0 for everything)"
        ));
    }
    let (tx, rx) = mpsc::channel::<Result<warp::sse::Event, Infallible>>(64);
    let follow = query.follow.unwrap_or(true);
    tokio::spawn(async move {
        let mut latest = hub.subscribe();
        let mut cursor = start;
        loop {
            latest.borrow_and_update();
            let page = match store.events_after(
                cursor,
                query.pipeline.as_deref(),
                query.execution.as_deref(),
                PAGE,
            ) {
                Ok(page) => page,
                Err(e) => {
                    tracing::error!(error = %e, "Cannot read events for a stream; ending it.");
                    return;
                }
            };
            let full = page.len() as i64 == PAGE;
            for row in page {
                cursor = row.id;
                let event = warp::sse::Event::default()
                    .id(row.id.to_string())
                    .event(row.event.detail_type.clone())
                    .data(envelope(&row).to_string());
                if tx.send(Ok(event)).await.is_err() {
                    return;
                }
            }
            if full {
                continue;
            }
            if !follow {
                return;
            }
            tokio::select! {
                changed = latest.changed() => if changed.is_err() { return },
                () = tx.closed() => return,
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    warp::sse::reply(
        warp::sse::keep_alive()
            .interval(Duration::from_secs(15))
            .stream(stream),
    )
    .into_response()
}

// ---- webhooks ---------------------------------------------------------------------------

/// The operator's webhooks, checked, with the client that delivers to them.
pub struct Webhooks {
    urls: Vec<String>,
    client: reqwest::Client,
    /// The secret (by name, in the secret store) whose value signs every delivery.
    signing_secret: Option<String>,
}

impl Webhooks {
    /// Checks the URLs (http or https, with a host) and builds an HTTPS client that
    /// trusts the system's roots, follows no redirects and uses no proxy.
    pub fn new(urls: &[String]) -> Result<Webhooks, EventsError> {
        let mut seen = BTreeMap::new();
        for url in urls {
            let parsed = reqwest::Url::parse(url).map_err(|e| EventsError::Webhook {
                url: url.clone(),
                message: format!("not a URL ({e}); give one like https://hooks.example.com/sluice"),
            })?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
                return Err(EventsError::Webhook {
                    url: url.clone(),
                    message: "must be an http:// or https:// URL with a host".into(),
                });
            }
            seen.insert(url.clone(), ());
        }
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| EventsError::Client(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| EventsError::Client(e.to_string()))?;
        Ok(Webhooks {
            urls: seen.into_keys().collect(),
            client,
            signing_secret: None,
        })
    }

    /// Signs every delivery with the value of this secret: an
    /// `X-Sluice-Signature-256: sha256=<hex HMAC-SHA256 of the body>` header, as GitHub
    /// signs its webhooks. The value is read at each delivery, so the secret may be set
    /// after the controller starts; until it is, deliveries wait and retry.
    pub fn signed_with(mut self, secret: Option<String>) -> Webhooks {
        self.signing_secret = secret;
        self
    }

    /// Starts the recorder and one delivery task per webhook.
    pub fn spawn(
        self,
        engine: &Arc<Engine>,
        hub: &Arc<EventHub>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = vec![tokio::spawn(run_recorder(engine.clone(), hub.clone()))];
        for url in self.urls {
            tasks.push(tokio::spawn(run_webhook(
                engine.clone(),
                hub.clone(),
                self.client.clone(),
                url,
                self.signing_secret.clone(),
            )));
        }
        tasks
    }
}

/// A pause of `base` with jitter: between half of it and all of it.
fn jittered(base: Duration) -> Duration {
    let factor: f64 = 0.5 + rand::random::<f64>() * 0.5;
    base.mul_f64(factor)
}

/// Why a delivery did not go through.
#[derive(Debug)]
enum Failure {
    /// Worth retrying until it works: a connection error or timeout, HTTP 408, 425,
    /// 429 or 5xx, an unset signing secret, ...
    Transient(String),
    /// The webhook refused the event for good (any other 4xx): asked again a few
    /// times, then skipped.
    Refused {
        /// Its answer.
        status: reqwest::StatusCode,
        /// What to log and record.
        message: String,
    },
}

/// How many times an event a webhook refuses (a 4xx other than 408, 425 and 429) is
/// sent again before it is skipped.
const REFUSAL_RETRIES: u32 = 5;

/// Whether an HTTP answer refuses the event for good: a 4xx other than 408 (Request
/// Timeout), 425 (Too Early) and 429 (Too Many Requests), which ask to try again.
fn is_refusal(status: reqwest::StatusCode) -> bool {
    status.is_client_error() && !matches!(status.as_u16(), 408 | 425 | 429)
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    row: &EventRow,
    key: Option<&ring::hmac::Key>,
) -> Result<(), Failure> {
    let body = serde_json::to_vec(&envelope(row))
        .map_err(|e| Failure::Transient(format!("cannot encode: {e}")))?;
    let mut request = client
        .post(url)
        .header("x-sluice-event-id", row.id.to_string())
        .header("x-sluice-event-type", row.event.detail_type.as_str())
        .header("content-type", "application/json");
    if let Some(key) = key {
        let tag = ring::hmac::sign(key, &body);
        request = request.header(
            "x-sluice-signature-256",
            format!("sha256={}", hex::encode(tag.as_ref())),
        );
    }
    let response = request
        .body(body)
        .send()
        .await
        .map_err(|e| Failure::Transient(format!("cannot deliver: {e}")))?;
    let status = response.status();
    let message = format!("the webhook answered HTTP {status}");
    if status.is_success() {
        Ok(())
    } else if is_refusal(status) {
        Err(Failure::Refused { status, message })
    } else {
        Err(Failure::Transient(message))
    }
}

/// The key that signs deliveries: the value of the secret named `name`, read now.
fn signing_key(engine: &Engine, name: Option<&str>) -> Result<Option<ring::hmac::Key>, String> {
    let Some(name) = name else {
        return Ok(None);
    };
    match engine.secret_value(name) {
        Ok(Some(value)) => Ok(Some(ring::hmac::Key::new(
            ring::hmac::HMAC_SHA256,
            value.as_bytes(),
        ))),
        Ok(None) => Err(format!(
            "the signing secret {name} is not set; set it with `sluice secret set {name}`"
        )),
        Err(e) => Err(format!("cannot read the signing secret {name}: {e}")),
    }
}

/// Delivers every event after the webhook's cursor, in order, each until it is
/// acknowledged with a 2xx (at least once: a restart between the answer and the
/// cursor's update sends it again). Failures back off exponentially, from 1 s to 5 min,
/// with jitter, and are retried for ever, except a refusal (a 4xx other than 408, 425
/// and 429): the event is sent again at most 5 times, then skipped, with a warning and
/// the webhook's `last_error` saying which event was given up on.
pub async fn run_webhook(
    engine: Arc<Engine>,
    hub: Arc<EventHub>,
    client: reqwest::Client,
    url: String,
    signing_secret: Option<String>,
) {
    let store = engine.store().clone();
    let key = move || signing_key(&engine, signing_secret.as_deref());
    deliver_events(store, hub, client, url, BACKOFF_FIRST, key).await;
}

/// [`run_webhook`]'s loop, with the first pause after a failure and the signing key
/// given.
async fn deliver_events(
    store: Arc<Store>,
    hub: Arc<EventHub>,
    client: reqwest::Client,
    url: String,
    backoff_first: Duration,
    key: impl Fn() -> Result<Option<ring::hmac::Key>, String>,
) {
    let mut latest = hub.subscribe();
    let mut cursor = loop {
        match store.webhook(&url) {
            Ok(row) => break row.delivered_id,
            Err(e) => {
                tracing::error!(webhook = %url, error = %e, "Cannot read the webhook's cursor; retrying in 5s.");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    };
    tracing::info!(webhook = %url, after = cursor, "Delivering events to a webhook.");
    loop {
        latest.borrow_and_update();
        let page = match store.events_after(cursor, None, None, PAGE) {
            Ok(page) => page,
            Err(e) => {
                tracing::error!(webhook = %url, error = %e, "Cannot read events to deliver; retrying in 5s.");
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
        };
        if page.is_empty() {
            if latest.changed().await.is_err() {
                return;
            }
            continue;
        }
        for row in page {
            deliver_one(&store, &client, &url, &row, backoff_first, &key).await;
            cursor = row.id;
        }
    }
}

/// Sends one event until the webhook acknowledges it, or refused it
/// 1 + [`REFUSAL_RETRIES`] times.
async fn deliver_one(
    store: &Store,
    client: &reqwest::Client,
    url: &str,
    row: &EventRow,
    backoff_first: Duration,
    key: &impl Fn() -> Result<Option<ring::hmac::Key>, String>,
) {
    let mut backoff = backoff_first;
    let mut refusals = 0;
    loop {
        let sent = match key() {
            Ok(key) => post(client, url, row, key.as_ref()).await,
            Err(message) => Err(Failure::Transient(message)),
        };
        let message = match sent {
            Ok(()) => {
                if let Err(e) = store.webhook_delivered(url, row.id) {
                    tracing::error!(webhook = %url, error = %e, "Cannot record a delivery; the event may be sent again after a restart.");
                }
                return;
            }
            Err(Failure::Refused { status, message }) => {
                if refusals == REFUSAL_RETRIES {
                    let attempts = refusals + 1;
                    tracing::warn!(
                        webhook = %url,
                        status = status.as_u16(),
                        event = row.id,
                        "The webhook {url} refused event {} with HTTP {status} {attempts} times; \
                         skipping it and delivering the next events.",
                        row.id
                    );
                    let record = format!(
                        "event {} skipped: the webhook refused it {attempts} times, \
                         last with HTTP {status}",
                        row.id
                    );
                    if let Err(e) = store.webhook_refused(url, row.id, &record) {
                        tracing::error!(webhook = %url, error = %e, "Cannot record a skipped event; it may be sent again after a restart.");
                    }
                    return;
                }
                refusals += 1;
                message
            }
            Err(Failure::Transient(message)) => message,
        };
        let pause = jittered(backoff);
        tracing::warn!(webhook = %url, event = row.id, error = %message, retry_in = ?pause, "Event delivery failed.");
        if let Err(e) = store.webhook_failed(url, &message) {
            tracing::error!(webhook = %url, error = %e, "Cannot record a failed delivery.");
        }
        tokio::time::sleep(pause).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{NewAttempt, NewExecution, phase};

    fn definition() -> &'static str {
        r#"{"name":"p","stages":[
            {"name":"Source","actions":[{"name":"Get","actionTypeId":{"category":"Source","provider":"directory"},"configuration":{"Path":"/tmp"},"outputArtifacts":["Code"]}]},
            {"name":"Build","actions":[
                {"name":"A","actionTypeId":{"category":"Build","provider":"commands"},"configuration":{"Commands":"true"},"inputArtifacts":["Code"],"runOrder":1},
                {"name":"B","actionTypeId":{"category":"Build","provider":"commands"},"configuration":{"Commands":"true"},"inputArtifacts":["Code"],"runOrder":2}
            ]}]}"#
    }

    struct Fixture {
        store: Arc<Store>,
        recorder: Recorder,
    }

    impl Fixture {
        fn new() -> Fixture {
            let store = Arc::new(Store::open_in_memory().unwrap());
            let parsed =
                sluice_pipeline::parse(definition(), Some(sluice_pipeline::Format::Json)).unwrap();
            store
                .create_pipeline("p", &parsed.pipeline.to_json())
                .unwrap();
            store
                .insert_execution(
                    "e1",
                    "p",
                    1,
                    &NewExecution {
                        trigger_type: "StartPipelineExecution",
                        trigger_detail: "test",
                        ..NewExecution::default()
                    },
                )
                .unwrap();
            let recorder = Recorder {
                store: store.clone(),
                hub: Arc::new(EventHub::new(0)),
                baseline: store.events_baseline().unwrap(),
                recorded: HashMap::new(),
                definitions: HashMap::new(),
            };
            Fixture { store, recorder }
        }

        fn attempt(&self, stage: i64, action: &str, number: i64) -> i64 {
            self.store
                .insert_attempt(&NewAttempt {
                    execution_id: "e1",
                    stage_index: stage,
                    action_name: action,
                    attempt: number,
                    run_order: 1,
                    fencing_token: "t",
                    resolved_configuration: &BTreeMap::new(),
                    rule_condition: None,
                })
                .unwrap()
        }

        fn run(&self, id: i64) {
            assert!(
                self.store
                    .move_attempt(id, "t", &[phase::QUEUED], phase::RUNNING, None, None)
                    .unwrap()
            );
        }

        fn finish(&self, id: i64, status: &str) {
            assert!(
                self.store
                    .finish_attempt(id, "t", status, Some("ok"), None, &BTreeMap::new(), &[])
                    .unwrap()
            );
        }

        /// Records, and returns every event so far as "kind state [name]".
        fn record(&mut self) -> Vec<String> {
            self.recorder.record("e1").unwrap();
            self.all()
        }

        fn all(&self) -> Vec<String> {
            self.store
                .events_after(0, None, None, 1000)
                .unwrap()
                .into_iter()
                .map(|row| {
                    let detail: Value = serde_json::from_str(&row.event.detail).unwrap();
                    let kind = match row.event.detail_type.as_str() {
                        PIPELINE_DETAIL_TYPE => "pipeline",
                        STAGE_DETAIL_TYPE => "stage",
                        _ => "action",
                    };
                    let name = detail["action"]
                        .as_str()
                        .or(detail["stage"].as_str())
                        .unwrap_or("");
                    format!("{kind} {} {name}", row.event.state)
                        .trim()
                        .to_string()
                })
                .collect()
        }
    }

    #[test]
    fn a_whole_run_seen_at_once_comes_out_in_causal_order() {
        let mut f = Fixture::new();
        f.store.insert_stage("e1", 0, "Source").unwrap();
        let get = f.attempt(0, "Get", 1);
        f.run(get);
        f.finish(get, "Succeeded");
        f.store.finish_stage("e1", 0, "Succeeded").unwrap();
        f.store.insert_stage("e1", 1, "Build").unwrap();
        let a = f.attempt(1, "A", 1);
        f.run(a);
        f.finish(a, "Succeeded");
        let b = f.attempt(1, "B", 1);
        f.run(b);
        f.finish(b, "Succeeded");
        f.store.finish_stage("e1", 1, "Succeeded").unwrap();
        f.store
            .set_execution_status("e1", "Succeeded", None)
            .unwrap();
        assert_eq!(
            f.record(),
            [
                "pipeline STARTED",
                "stage STARTED Source",
                "action STARTED Get",
                "action SUCCEEDED Get",
                "stage SUCCEEDED Source",
                "stage STARTED Build",
                "action STARTED A",
                "action SUCCEEDED A",
                "action STARTED B",
                "action SUCCEEDED B",
                "stage SUCCEEDED Build",
                "pipeline SUCCEEDED",
            ]
        );
        // Nothing changed: nothing new.
        assert_eq!(f.record().len(), 12);
    }

    #[test]
    fn step_by_step_failure_retry_and_resume() {
        let mut f = Fixture::new();
        assert_eq!(f.record(), ["pipeline STARTED"]);
        f.store.insert_stage("e1", 0, "Source").unwrap();
        let get = f.attempt(0, "Get", 1);
        // Queued is not started.
        assert_eq!(f.record().len(), 2);
        f.run(get);
        assert_eq!(f.record().len(), 3);
        f.finish(get, "Failed");
        f.store.finish_stage("e1", 0, "Failed").unwrap();
        f.store
            .set_execution_status("e1", "Failed", Some("Action Source/Get failed"))
            .unwrap();
        let after_failure = f.record();
        assert_eq!(
            after_failure[3..],
            [
                "action FAILED Get",
                "stage FAILED Source",
                "pipeline FAILED"
            ]
        );
        // A retry (FAILED_ACTIONS), with a fresh recorder as after a restart.
        f.recorder.recorded.clear();
        f.store.reopen_for_retry("e1", 0, 0, false).unwrap();
        let again = f.attempt(0, "Get", 2);
        f.run(again);
        assert_eq!(
            f.record()[6..],
            [
                "pipeline RESUMED",
                "stage RESUMED Source",
                "action STARTED Get"
            ]
        );
        f.finish(again, "Succeeded");
        f.store.finish_stage("e1", 0, "Succeeded").unwrap();
        assert_eq!(
            f.record()[9..],
            ["action SUCCEEDED Get", "stage SUCCEEDED Source"]
        );
        // Stopped without a Stopping seen: STOPPING comes first.
        f.store
            .set_execution_status("e1", "Stopped", Some("by request"))
            .unwrap();
        assert_eq!(f.record()[11..], ["pipeline STOPPING", "pipeline STOPPED"]);
        // The scan finds nothing more to say.
        f.recorder.recorded.clear();
        f.recorder.scan().unwrap();
        assert_eq!(f.all().len(), 13);
    }

    #[test]
    fn details_are_shaped_like_eventbridge() {
        let mut f = Fixture::new();
        f.store.insert_stage("e1", 1, "Build").unwrap();
        let a = f.attempt(1, "A", 1);
        f.run(a);
        f.recorder.record("e1").unwrap();
        let rows = f.store.events_after(0, None, None, 10).unwrap();
        let action = envelope(&rows[2]);
        assert_eq!(action["detail-type"], ACTION_DETAIL_TYPE);
        assert_eq!(action["source"], "sluice");
        assert_eq!(action["id"], rows[2].id);
        let detail = &action["detail"];
        assert_eq!(detail["pipeline"], "p");
        assert_eq!(detail["version"], 1);
        assert_eq!(detail["execution-id"], "e1");
        assert_eq!(detail["stage"], "Build");
        assert_eq!(detail["action"], "A");
        assert_eq!(detail["state"], "STARTED");
        assert_eq!(detail["attempt"], 1);
        assert_eq!(
            detail["type"],
            json!({"owner": "Sluice", "provider": "commands", "category": "Build", "version": "1"})
        );
        let pipeline = envelope(&rows[0]);
        assert_eq!(
            pipeline["detail"]["execution-trigger"]["trigger-type"],
            "StartPipelineExecution"
        );
        assert!(pipeline["time"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn only_4xx_other_than_408_425_and_429_are_refusals() {
        for code in [400, 401, 403, 404, 410, 413, 422, 451, 499] {
            assert!(is_refusal(StatusCode::from_u16(code).unwrap()), "{code}");
        }
        for code in [200, 204, 301, 308, 408, 425, 429, 500, 502, 503, 599] {
            assert!(!is_refusal(StatusCode::from_u16(code).unwrap()), "{code}");
        }
    }

    /// (status answered, event id) of each request a [`receiver`] got.
    type Answered = Arc<std::sync::Mutex<Vec<(u16, i64)>>>;

    /// An HTTP server on 127.0.0.1 answering each POSTed event with `answer(event id)`.
    fn receiver(answer: fn(i64) -> u16) -> (String, Answered) {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let seen: Answered = Arc::default();
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { break };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0u8; length];
                if reader.read_exact(&mut body).is_err() {
                    continue;
                }
                let event: Value = serde_json::from_slice(&body).unwrap();
                let id = event["id"].as_i64().unwrap();
                let status = answer(id);
                log.lock().unwrap().push((status, id));
                let _ = stream.write_all(
                    format!(
                        "HTTP/1.1 {status} Answer\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    )
                    .as_bytes(),
                );
            }
        });
        (url, seen)
    }

    fn event(state: &str) -> NewEvent {
        NewEvent {
            time_ms: 1,
            detail_type: PIPELINE_DETAIL_TYPE.into(),
            pipeline_name: "p".into(),
            execution_id: "e1".into(),
            entity: "pipeline".into(),
            state: state.into(),
            generation: 0,
            detail: json!({ "state": state }).to_string(),
        }
    }

    /// Delivers three events to a webhook answering `answer`, until the third one is
    /// recorded as delivered; returns what it answered and the webhook's record.
    async fn deliver_three(answer: fn(i64) -> u16) -> (Vec<(u16, i64)>, crate::store::WebhookRow) {
        let store = Arc::new(Store::open_in_memory().unwrap());
        let (url, seen) = receiver(answer);
        // Registered before the events: it gets all of them.
        store.webhook(&url).unwrap();
        let last = store
            .insert_events(&[event("STARTED"), event("STOPPING"), event("STOPPED")])
            .unwrap();
        let client = Webhooks::new(std::slice::from_ref(&url)).unwrap().client;
        let task = tokio::spawn(deliver_events(
            store.clone(),
            Arc::new(EventHub::new(last)),
            client,
            url.clone(),
            Duration::from_millis(1),
            || Ok(None),
        ));
        let delivered = tokio::time::timeout(Duration::from_secs(20), async {
            while store.webhook(&url).unwrap().delivered_id < last {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        task.abort();
        let seen = seen.lock().unwrap().clone();
        assert!(
            delivered.is_ok(),
            "the last event never got through: {seen:?}"
        );
        (seen, store.webhook(&url).unwrap())
    }

    #[tokio::test]
    async fn a_refused_event_is_retried_five_times_then_skipped_and_recorded() {
        let (seen, hook) = deliver_three(|id| if id == 1 { 400 } else { 200 }).await;
        let mut expected = vec![(400, 1); 6];
        expected.extend([(200, 2), (200, 3)]);
        assert_eq!(seen, expected);
        assert_eq!(hook.delivered_id, 3);
        assert_eq!(hook.failures, 0);
        assert_eq!(
            hook.last_error.as_deref(),
            Some("event 1 skipped: the webhook refused it 6 times, last with HTTP 400 Bad Request")
        );
    }

    #[tokio::test]
    async fn throttling_and_server_errors_are_retried_until_delivered() {
        // 429 and 503 four times each: more than a refusal gets, nothing skipped.
        fn answer(id: i64) -> u16 {
            static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            match (id, call) {
                (1, 0..4) => 429,
                (1, 4..8) => 503,
                _ => 200,
            }
        }
        let (seen, hook) = deliver_three(answer).await;
        assert_eq!(seen.len(), 11, "{seen:?}");
        assert_eq!(seen[8..], [(200, 1), (200, 2), (200, 3)]);
        assert_eq!(hook.delivered_id, 3);
        assert_eq!(hook.failures, 0);
        assert_eq!(hook.last_error, None);
    }

    #[test]
    fn lifecycles_fill_in_what_was_missed() {
        let started = ("STARTED".to_string(), 0);
        let failed = ("FAILED".to_string(), 0);
        assert_eq!(
            lifecycle(None, "STARTED", 0, true),
            (vec!["STARTED"], vec![])
        );
        assert_eq!(
            lifecycle(None, "SUCCEEDED", 0, true),
            (vec!["STARTED"], vec!["SUCCEEDED".to_string()])
        );
        assert_eq!(
            lifecycle(Some(&started), "STOPPED", 0, true),
            (vec!["STOPPING"], vec!["STOPPED".to_string()])
        );
        assert_eq!(
            lifecycle(Some(&started), "STOPPED", 0, false),
            (vec![], vec!["STOPPED".to_string()])
        );
        assert_eq!(
            lifecycle(Some(&failed), "FAILED", 0, true),
            (vec![], vec![])
        );
        assert_eq!(
            lifecycle(Some(&failed), "FAILED", 1, true),
            (vec!["RESUMED"], vec!["FAILED".to_string()])
        );
        assert_eq!(
            lifecycle(Some(&failed), "STARTED", 1, true),
            (vec!["RESUMED"], vec![])
        );
    }
}
