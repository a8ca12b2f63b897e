//! The HTTPS API: one warp filter tree, served by [`crate::server`].
//!
//! Humans and scripts authenticate with an API token (`Authorization: Bearer …`).
//! Agents authenticate with the client certificate the controller signed when they
//! joined; the TLS layer has verified it chains to our CA, and here we check that it
//! belongs to a registered, non-revoked agent. Every error is JSON:
//! `{"code": "...", "message": "...", "errors": [{"path": "...", "message": "..."}]}`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::hyper::body::Bytes;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use crate::accounts::{Accounts, SESSION_COOKIE};

mod web;
use crate::engine::{Engine, Event};
use crate::store::{AgentRow, StoreError, now_ms};
use crate::tls::Certificates;
use sluice_pipeline::conditions::Kind;

/// Who is on the other end of a TLS connection, as the server saw it.
#[derive(Clone, Debug)]
pub struct Peer {
    /// sha256 of the client certificate, if one was presented (and verified).
    pub client_cert_fingerprint: Option<String>,
}

/// Shared state of the API handlers.
#[derive(Clone)]
pub struct ApiState {
    /// The engine.
    pub engine: Arc<Engine>,
    /// The certificates (to sign agents' requests and show the CA).
    pub certs: Arc<Certificates>,
    /// Wakes event streams when events are recorded.
    pub events: Arc<crate::events::EventHub>,
    /// Readiness, metrics and the agents' plugin cache reports.
    pub ops: Arc<crate::ops::Ops>,
    /// Web UI users and their sessions.
    pub accounts: Arc<Accounts>,
    /// Who is calling: set by [`authenticated`].
    pub caller: Caller,
}

/// Who made a request.
#[derive(Clone, Debug, Default)]
pub enum Caller {
    /// Nobody proved who they are (only open routes see this).
    #[default]
    Anonymous,
    /// A script or the CLI, with an API token.
    Token,
    /// A person signed in to the web UI.
    User {
        /// Their name.
        name: String,
        /// Their role.
        role: String,
    },
}

impl ApiState {
    /// The name recorded as having done something: the signed-in user, else the name
    /// the CLI sends (`X-Sluice-User`), else "api".
    fn who(&self, claimed: Option<String>) -> String {
        match &self.caller {
            Caller::User { name, .. } => name.clone(),
            _ => claimed.unwrap_or_else(|| "api".into()),
        }
    }
}

/// An API error: status, stable code, message, and per-field problems.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    errors: Vec<FieldError>,
}

/// One problem with one field of a request.
#[derive(Debug, Serialize)]
pub struct FieldError {
    /// Where, e.g. `stages[1].actions[0].inputArtifacts[0]`.
    pub path: String,
    /// What was wrong.
    pub message: String,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "<[FieldError]>::is_empty")]
    errors: &'a [FieldError],
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            errors: Vec::new(),
        }
    }

    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    fn internal(err: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %err, "Request failed.");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("internal error: {err}"),
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> ApiError {
        match err {
            StoreError::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, "not_found", m),
            StoreError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            other => ApiError::internal(other),
        }
    }
}

impl From<crate::engine::EngineError> for ApiError {
    fn from(err: crate::engine::EngineError) -> ApiError {
        match err {
            crate::engine::EngineError::Store(e) => e.into(),
            crate::engine::EngineError::Invalid(m) => ApiError::bad_request(m),
            other => ApiError::internal(other),
        }
    }
}

impl Reply for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            code: self.code,
            message: &self.message,
            errors: &self.errors,
        };
        warp::reply::with_status(warp::reply::json(&body), self.status).into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

fn respond(result: ApiResult) -> Result<Response, Infallible> {
    Ok(result.unwrap_or_else(Reply::into_response))
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> ApiResult {
    Ok(warp::reply::with_status(warp::reply::json(value), status).into_response())
}

/// Hex sha256 of a secret, as stored.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A fresh random secret with a readable prefix.
pub fn new_secret(prefix: &str) -> String {
    let bytes: [u8; 24] = rand::random();
    format!("{prefix}_{}", hex::encode(bytes))
}

/// The whole route tree.
pub fn routes(state: ApiState) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    let api = warp::path("api").and(warp::path("v1"));
    let health = warp::path("healthz")
        .and(warp::path::end())
        .and(warp::get())
        .map(|| warp::reply::json(&serde_json::json!({"status": "ok"})).into_response());

    let [readyz, metrics, openapi] = operations_routes(&state);

    let ca = api
        .and(warp::path("ca"))
        .and(warp::path::end())
        .and(warp::get())
        .and(with(state.clone()))
        .map(|s: ApiState| {
            warp::reply::with_header(
                s.certs.ca_pem().to_string(),
                "content-type",
                "application/x-pem-file",
            )
            .into_response()
        });

    let join = api
        .and(warp::path!("agents" / "join"))
        .and(warp::post())
        .and(json_body())
        .and(with(state.clone()))
        .and_then(|req: JoinRequest, s: ApiState| async move { respond(join_agent(req, s)) });

    let connect = api
        .and(warp::path!("agents" / "connect"))
        .and(warp::get())
        .and(peer())
        .and(with(state.clone()))
        .and(warp::ws())
        .map(
            |peer: Peer, s: ApiState, ws: warp::ws::Ws| match agent_of(&s, &peer) {
                Ok(agent) => {
                    let (engine, ops) = (s.engine.clone(), s.ops.clone());
                    ws.max_message_size(4 << 20)
                        .on_upgrade(move |socket| crate::sessions::run(engine, ops, agent, socket))
                        .into_response()
                }
                Err(e) => e.into_response(),
            },
        );

    let put_blob = api
        .and(warp::path!("blobs" / String))
        .and(warp::put())
        .and(peer())
        .and(with(state.clone()))
        .and(warp::body::stream())
        .and_then(|digest: String, peer: Peer, s: ApiState, body| async move {
            respond(put_blob(digest, peer, s, body).await)
        });

    let get_blob = api
        .and(warp::path("blobs"))
        .and(warp::get())
        .and(blob_reader(state.clone()))
        .and(warp::fs::dir(state.engine.blobs().root().to_owned()))
        .map(|file: warp::fs::File| file.into_response());

    let create_token = api
        .and(warp::path!("agents" / "tokens"))
        .and(warp::post())
        .and(authenticated(state.clone()))
        .and(json_body())
        .and_then(
            |s: ApiState, req: TokenRequest| async move { respond(create_join_token(req, s)) },
        );

    let list_agents = api
        .and(warp::path!("agents"))
        .and(warp::get())
        .and(authenticated(state.clone()))
        .and_then(|s: ApiState| async move { respond(list_agents(s)) });

    // Drain (no new work), undrain, revoke (connection closed, certificate refused).
    let drain_agent = api
        .and(warp::path!("agents" / String / "drain"))
        .and(warp::post())
        .and(authenticated(state.clone()))
        .and_then(|id: String, s: ApiState| async move {
            respond(agent_control(s, &id, AgentControl::Drain))
        });
    let undrain_agent = api
        .and(warp::path!("agents" / String / "undrain"))
        .and(warp::post())
        .and(authenticated(state.clone()))
        .and_then(|id: String, s: ApiState| async move {
            respond(agent_control(s, &id, AgentControl::Undrain))
        });
    let revoke_agent = api
        .and(warp::path!("agents" / String / "revoke"))
        .and(warp::post())
        .and(authenticated(state.clone()))
        .and_then(|id: String, s: ApiState| async move {
            respond(agent_control(s, &id, AgentControl::Revoke))
        });

    let definition_body = warp::body::content_length_limit(1 << 20).and(warp::body::bytes());

    let validate = api
        .and(warp::path!("pipelines" / "validate"))
        .and(warp::post())
        .and(authenticated(state.clone()))
        .and(warp::query::<FormatQuery>())
        .and(definition_body)
        .and_then(|s: ApiState, q: FormatQuery, body: Bytes| async move {
            respond(validate_pipeline(s, q, body))
        });

    let create_pipeline = api
        .and(warp::path!("pipelines"))
        .and(warp::post())
        .and(authenticated(state.clone()))
        .and(warp::query::<FormatQuery>())
        .and(definition_body)
        .and_then(|s: ApiState, q: FormatQuery, body: Bytes| async move {
            respond(save_pipeline(s, q, body, None))
        });

    let update_pipeline = api
        .and(warp::path!("pipelines" / String))
        .and(warp::put())
        .and(authenticated(state.clone()))
        .and(warp::query::<FormatQuery>())
        .and(definition_body)
        .and_then(
            |name: String, s: ApiState, q: FormatQuery, body: Bytes| async move {
                respond(save_pipeline(s, q, body, Some(name)))
            },
        );

    let list_pipelines = api
        .and(warp::path!("pipelines"))
        .and(warp::get())
        .and(authenticated(state.clone()))
        .and_then(|s: ApiState| async move {
            respond(
                s.engine
                    .store()
                    .list_pipelines()
                    .map_err(ApiError::from)
                    .and_then(|p| json(StatusCode::OK, &p)),
            )
        });

    let get_pipeline = api
        .and(warp::path!("pipelines" / String))
        .and(warp::get())
        .and(authenticated(state.clone()))
        .and(warp::query::<VersionQuery>())
        .and_then(|name: String, s: ApiState, q: VersionQuery| async move {
            respond(get_pipeline(s, name, q))
        });

    let pipeline_versions = api
        .and(warp::path!("pipelines" / String / "versions"))
        .and(warp::get())
        .and(authenticated(state.clone()))
        .and_then(|name: String, s: ApiState| async move { respond(pipeline_versions(s, name)) });

    let start = api
        .and(warp::path!("pipelines" / String / "executions"))
        .and(warp::post())
        .and(authenticated(state.clone()))
        .and(warp::header::optional::<String>("x-sluice-user"))
        .and(warp::body::content_length_limit(256 * 1024))
        .and(warp::body::bytes())
        .and_then(
            |name: String, s: ApiState, who: Option<String>, body: Bytes| async move {
                respond(start_execution(s, name, who, body))
            },
        );

    let list_executions = api
        .and(warp::path!("executions"))
        .and(warp::get())
        .and(authenticated(state.clone()))
        .and(warp::query::<ListQuery>())
        .and_then(|s: ApiState, q: ListQuery| async move { respond(list_executions(s, q)) });

    let get_execution = api
        .and(warp::path!("executions" / String))
        .and(warp::get())
        .and(authenticated(state.clone()))
        .and(warp::query::<WaitQuery>())
        .and_then(|id: String, s: ApiState, q: WaitQuery| async move {
            respond(get_execution(s, id, q).await)
        });

    let get_log = api
        .and(warp::path!("executions" / String / "logs" / i64))
        .and(warp::get())
        .and(authenticated(state.clone()))
        .and(warp::query::<LogQuery>())
        .and_then(
            |id: String, attempt: i64, s: ApiState, q: LogQuery| async move {
                respond(get_log(s, id, attempt, q).await)
            },
        );

    let get_artifact = api
        .and(warp::path!("executions" / String / "artifacts" / String))
        .and(warp::get())
        .and(authenticated(state.clone()))
        .and_then(|id: String, name: String, s: ApiState| async move {
            respond(get_artifact(s, id, name).await)
        });

    let stop = api
        .and(warp::path!("executions" / String / "stop"))
        .and(warp::post())
        .and(authenticated(state.clone()))
        .and(json_body())
        .and_then(|id: String, s: ApiState, req: StopRequest| async move {
            respond(stop_execution(s, id, req))
        });

    let retry = api
        .and(warp::path!(
            "executions" / String / "stages" / String / "retry"
        ))
        .and(warp::post())
        .and(authenticated(state.clone()))
        .and(json_body())
        .and_then(
            |id: String, stage: String, s: ApiState, req: RetryRequest| async move {
                respond(retry_stage(s, id, stage, req))
            },
        );

    let override_condition = api
        .and(warp::path!(
            "executions" / String / "stages" / String / "override-condition"
        ))
        .and(warp::post())
        .and(authenticated(state.clone()))
        .and(warp::header::optional::<String>("x-sluice-user"))
        .and(json_body())
        .and_then(
            |id: String,
             stage: String,
             s: ApiState,
             who: Option<String>,
             req: OverrideRequest| async move {
                let who = s.who(who);
                respond(override_condition(s, id, stage, &who, req))
            },
        );

    let rollback_stage = api
        .and(warp::path!("pipelines" / String / "rollback"))
        .and(warp::post())
        .and(authenticated(state.clone()))
        .and(warp::header::optional::<String>("x-sluice-user"))
        .and(json_body())
        .and_then(
            |name: String, s: ApiState, who: Option<String>, req: RollbackRequest| async move {
                let who = s.who(who);
                respond(rollback_stage(s, name, &who, req))
            },
        );

    let set_transition = api
        .and(warp::path!(
            "pipelines" / String / "stages" / String / "transition"
        ))
        .and(warp::post())
        .and(authenticated(state.clone()))
        .and(warp::header::optional::<String>("x-sluice-user"))
        .and(json_body())
        .and_then(
            |name: String,
             stage: String,
             s: ApiState,
             who: Option<String>,
             req: TransitionRequest| async move {
                let who = s.who(who);
                respond(
                    s.engine
                        .set_transition(&name, &stage, req.enabled, &req.reason, &who)
                        .map_err(ApiError::from)
                        .and_then(|t| json(StatusCode::OK, &t)),
                )
            },
        );

    let transitions = api
        .and(warp::path!("pipelines" / String / "transitions"))
        .and(warp::get())
        .and(authenticated(state.clone()))
        .and_then(|name: String, s: ApiState| async move {
            respond(
                s.engine
                    .store()
                    .pipeline_version(&name, None)
                    .and_then(|_| s.engine.store().transitions(&name))
                    .map_err(ApiError::from)
                    .and_then(|t| json(StatusCode::OK, &t)),
            )
        });

    let decide = api
        .and(warp::path!("executions" / String / "approvals"))
        .and(warp::post())
        .and(authenticated(state.clone()))
        .and(warp::header::optional::<String>("x-sluice-user"))
        .and(json_body())
        .and_then(
            |id: String, s: ApiState, who: Option<String>, req: ApprovalRequest| async move {
                respond(decide_approval(s, id, who, req))
            },
        );

    let list_plugins = api
        .and(warp::path!("plugins"))
        .and(warp::get())
        .and(authenticated(state.clone()))
        .and_then(|s: ApiState| async move { respond(plugin_views(s, None)) });

    let show_plugin = api
        .and(warp::path!("plugins" / String))
        .and(warp::get())
        .and(authenticated(state.clone()))
        .and_then(|id: String, s: ApiState| async move { respond(plugin_views(s, Some(id))) });

    let install_plugin = api
        .and(warp::path!("plugins"))
        .and(warp::post())
        .and(authenticated(state.clone()))
        .and(warp::body::content_length_limit(96 << 20))
        .and(warp::body::json())
        .and_then(|s: ApiState, req: InstallRequest| async move {
            respond(install_plugin(s, req).await)
        });

    let remove_plugin = api
        .and(warp::path!("plugins" / String / String))
        .and(warp::delete())
        .and(authenticated(state.clone()))
        .and_then(|id: String, version: String, s: ApiState| async move {
            respond(
                s.engine
                    .remove_plugin(&id, &version)
                    .map_err(ApiError::from)
                    .map(|()| StatusCode::NO_CONTENT.into_response()),
            )
        });

    let grant_plugin = api
        .and(warp::path!("plugins" / String / String / "grants"))
        .and(warp::put())
        .and(authenticated(state.clone()))
        .and(json_body())
        .and_then(
            |id: String, version: String, s: ApiState, req: GrantsRequest| async move {
                respond(set_grants(s, id, version, req))
            },
        );

    let list_secrets = api
        .and(warp::path!("secrets"))
        .and(warp::get())
        .and(authenticated(state.clone()))
        .and_then(|s: ApiState| async move { respond(secret_names(s)) });

    let put_secret = api
        .and(warp::path!("secrets" / String))
        .and(warp::put())
        .and(authenticated(state.clone()))
        .and(json_body())
        .and_then(|name: String, s: ApiState, req: SecretRequest| async move {
            respond(put_secret(s, name, req))
        });

    let delete_secret = api
        .and(warp::path!("secrets" / String))
        .and(warp::delete())
        .and(authenticated(state.clone()))
        .and_then(|name: String, s: ApiState| async move {
            respond(
                s.engine
                    .store()
                    .delete_secret(&name)
                    .map_err(ApiError::from)
                    .map(|()| StatusCode::NO_CONTENT.into_response()),
            )
        });

    let events = api
        .and(warp::path!("events"))
        .and(warp::get())
        .and(authenticated(state.clone()))
        .and(warp::query::<crate::events::EventsQuery>())
        .and(warp::header::optional::<String>("last-event-id"))
        .map(
            |s: ApiState, q: crate::events::EventsQuery, last: Option<String>| {
                crate::events::sse_reply(s.engine.store().clone(), s.events.clone(), q, last)
            },
        );

    let event_webhooks = api
        .and(warp::path!("events" / "webhooks"))
        .and(warp::get())
        .and(authenticated(state.clone()))
        .and_then(|s: ApiState| async move {
            respond(
                s.engine
                    .store()
                    .webhooks()
                    .map_err(ApiError::from)
                    .and_then(|w| json(StatusCode::OK, &w)),
            )
        });

    let trigger_webhooks = trigger_webhook_routes(&state);

    // Boxing each route keeps the filter type flat: a long chain of `.or()` over
    // unboxed filters makes type checking take minutes.
    let routes: Vec<BoxedFilter<(Response,)>> = vec![
        health.boxed(),
        readyz,
        metrics,
        openapi,
        ca.boxed(),
        join.boxed(),
        connect.boxed(),
        put_blob.boxed(),
        get_blob.boxed(),
        create_token.boxed(),
        list_agents.boxed(),
        drain_agent.boxed(),
        undrain_agent.boxed(),
        revoke_agent.boxed(),
        validate.boxed(),
        create_pipeline.boxed(),
        update_pipeline.boxed(),
        list_pipelines.boxed(),
        get_pipeline.boxed(),
        pipeline_versions.boxed(),
        start.boxed(),
        list_executions.boxed(),
        get_execution.boxed(),
        get_log.boxed(),
        get_artifact.boxed(),
        stop.boxed(),
        decide.boxed(),
        set_transition.boxed(),
        transitions.boxed(),
        retry.boxed(),
        override_condition.boxed(),
        rollback_stage.boxed(),
        list_plugins.boxed(),
        show_plugin.boxed(),
        install_plugin.boxed(),
        remove_plugin.boxed(),
        grant_plugin.boxed(),
        list_secrets.boxed(),
        put_secret.boxed(),
        delete_secret.boxed(),
        events.boxed(),
        event_webhooks.boxed(),
    ];
    let routes: Vec<BoxedFilter<(Response,)>> = routes
        .into_iter()
        .chain(trigger_webhooks)
        .chain(web::routes(&state))
        .collect();
    let mut all: Option<BoxedFilter<(Response,)>> = None;
    for route in routes {
        all = Some(match all {
            None => route,
            Some(previous) => previous.or(route).unify().boxed(),
        });
    }
    all.unwrap_or_else(|| {
        warp::any()
            .and_then(|| async { Err::<Response, Rejection>(warp::reject::not_found()) })
            .boxed()
    })
    .recover(recover)
    .unify()
}

/// `GET /readyz` (no token), `GET /metrics` (API token, like every other read: it
/// names pipelines) and `GET /api/v1/openapi.json` (no token). See [`crate::ops`].
fn operations_routes(state: &ApiState) -> [BoxedFilter<(Response,)>; 3] {
    let readyz = warp::path("readyz")
        .and(warp::path::end())
        .and(warp::get())
        .and(with(state.clone()))
        .map(|s: ApiState| {
            let (status, body) = s.ops.readiness(&s.engine);
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            warp::reply::with_status(warp::reply::json(&body), status).into_response()
        });
    let metrics = warp::path("metrics")
        .and(warp::path::end())
        .and(warp::get())
        .and(authenticated(state.clone()))
        .and_then(|s: ApiState| async move {
            // Reading the store is blocking work.
            let result = tokio::task::spawn_blocking(move || s.ops.render_metrics(&s.engine))
                .await
                .map_err(ApiError::internal)
                .and_then(|r| r.map_err(ApiError::internal))
                .map(|text| {
                    warp::reply::with_header(text, "content-type", crate::ops::METRICS_CONTENT_TYPE)
                        .into_response()
                });
            respond(result)
        });
    let openapi = warp::path("api")
        .and(warp::path("v1"))
        .and(warp::path("openapi.json"))
        .and(warp::path::end())
        .and(warp::get())
        .map(|| {
            warp::reply::with_header(crate::ops::OPENAPI, "content-type", "application/json")
                .into_response()
        });
    [readyz.boxed(), metrics.boxed(), openapi.boxed()]
}

/// A JSON request body of at most 64 KiB.
fn json_body<T: serde::de::DeserializeOwned + Send>()
-> impl Filter<Extract = (T,), Error = Rejection> + Clone {
    warp::body::content_length_limit(64 * 1024).and(warp::body::json())
}

fn with(state: ApiState) -> impl Filter<Extract = (ApiState,), Error = Infallible> + Clone {
    warp::any().map(move || state.clone())
}

fn peer() -> impl Filter<Extract = (Peer,), Error = Infallible> + Clone {
    warp::ext::optional::<Peer>().map(|p: Option<Peer>| {
        p.unwrap_or(Peer {
            client_cert_fingerprint: None,
        })
    })
}

fn bearer() -> impl Filter<Extract = (Option<String>,), Error = Rejection> + Clone {
    warp::header::optional::<String>("authorization").map(|h: Option<String>| {
        h.and_then(|v| v.strip_prefix("Bearer ").map(|t| t.trim().to_string()))
    })
}

#[derive(Debug)]
struct Unauthorized(String);
impl warp::reject::Reject for Unauthorized {}

#[derive(Debug)]
struct Forbidden(String);
impl warp::reject::Reject for Forbidden {}

#[derive(Debug)]
struct MissingBlob(String);
impl warp::reject::Reject for MissingBlob {}

#[derive(Debug)]
struct Internal(String);
impl warp::reject::Reject for Internal {}

/// Requires a valid API token (`Authorization: Bearer`), or a web UI session cookie;
/// with a cookie, every method but GET and HEAD must also carry the session's
/// `X-CSRF-Token`. Records who is calling in the state it passes on.
fn authenticated(state: ApiState) -> impl Filter<Extract = (ApiState,), Error = Rejection> + Clone {
    bearer()
        .and(warp::cookie::optional::<String>(SESSION_COOKIE))
        .and(warp::method())
        .and(warp::header::optional::<String>("x-csrf-token"))
        .and(with(state))
        .and_then(
            |token: Option<String>,
             cookie: Option<String>,
             method: warp::http::Method,
             csrf: Option<String>,
             mut s: ApiState| async move {
                if let Some(token) = token {
                    return match s.engine.store().api_token(&hash_secret(&token)) {
                        Ok(Some(_)) => {
                            s.caller = Caller::Token;
                            Ok(s)
                        }
                        Ok(None) => Err(warp::reject::custom(Unauthorized(
                            "the API token is not valid; use the token printed by `sluice controller` or `sluice up`".into(),
                        ))),
                        Err(e) => Err(warp::reject::custom(Internal(format!(
                            "could not check the API token: {e}"
                        )))),
                    };
                }
                let Some(cookie) = cookie else {
                    return Err(warp::reject::custom(Unauthorized(
                        "missing API token: pass `Authorization: Bearer <token>` (the CLI reads SLUICE_TOKEN or its config file), or sign in".into(),
                    )));
                };
                let (session, user) = match s.accounts.session(&cookie) {
                    Ok(Some(found)) => found,
                    Ok(None) => {
                        return Err(warp::reject::custom(Unauthorized(
                            "your session has ended; sign in again".into(),
                        )));
                    }
                    Err(e) => {
                        return Err(warp::reject::custom(Internal(format!(
                            "could not check the session: {e}"
                        ))));
                    }
                };
                let reads = method == warp::http::Method::GET || method == warp::http::Method::HEAD;
                if !reads && csrf.as_deref() != Some(session.csrf_token.as_str()) {
                    return Err(warp::reject::custom(Forbidden(
                        "missing or wrong X-CSRF-Token header: a change made with a session cookie must carry the token GET /api/v1/session returns".into(),
                    )));
                }
                s.caller = Caller::User {
                    name: user.name,
                    role: user.role,
                };
                Ok(s)
            },
        )
}

async fn recover(rejection: Rejection) -> Result<Response, Infallible> {
    let error = if let Some(Unauthorized(message)) = rejection.find() {
        ApiError::unauthorized(message.clone())
    } else if let Some(Forbidden(message)) = rejection.find() {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message.clone())
    } else if let Some(MissingBlob(message)) = rejection.find() {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message.clone())
    } else if let Some(Internal(message)) = rejection.find() {
        ApiError::internal(message)
    } else if rejection.is_not_found() {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
    } else if let Some(e) = rejection.find::<warp::filters::body::BodyDeserializeError>() {
        ApiError::bad_request(format!("malformed JSON body: {e}"))
    } else if let Some(e) = rejection.find::<warp::reject::InvalidQuery>() {
        ApiError::bad_request(format!("malformed query string: {e}"))
    } else if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "request body is too large",
        )
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed on this endpoint",
        )
    } else if let Some(e) = rejection.find::<warp::reject::MissingHeader>() {
        ApiError::bad_request(e.to_string())
    } else {
        ApiError::bad_request(format!("bad request: {rejection:?}"))
    };
    Ok(error.into_response())
}

/// The agent a verified client certificate belongs to.
fn agent_of(s: &ApiState, peer: &Peer) -> Result<AgentRow, ApiError> {
    let Some(fingerprint) = &peer.client_cert_fingerprint else {
        return Err(ApiError::unauthorized(
            "this endpoint is for agents and needs the client certificate from `sluice-agent join`",
        ));
    };
    match s.engine.store().agent_by_fingerprint(fingerprint)? {
        Some(agent) if agent.state == "revoked" => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "revoked",
            format!(
                "agent {} was revoked; join again with a new token",
                agent.id
            ),
        )),
        Some(agent) => Ok(agent),
        None => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "unknown_agent",
            "this client certificate belongs to no registered agent; join again with a new token",
        )),
    }
}

// ---- agents ----------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct JoinRequest {
    token: String,
    csr: String,
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default = "one")]
    capacity: i64,
    version: String,
}

fn one() -> i64 {
    1
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JoinResponse {
    agent_id: String,
    certificate: String,
    ca_certificate: String,
    labels: BTreeMap<String, String>,
}

fn join_agent(req: JoinRequest, s: ApiState) -> ApiResult {
    let agent_id = format!("agent-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let certificate = s.certs.sign_agent_csr(&req.csr, &agent_id).map_err(|e| {
        ApiError::bad_request(format!("csr: not a valid certificate signing request: {e}"))
    })?;
    let der = rustls_pemfile::certs(&mut certificate.as_bytes())
        .next()
        .ok_or_else(|| ApiError::internal("signed certificate has no PEM block"))?
        .map_err(ApiError::internal)?;
    let agent = AgentRow {
        id: agent_id.clone(),
        name: req.name,
        labels: req.labels,
        granted_labels: BTreeMap::new(),
        capacity: req.capacity.clamp(1, 1024),
        version: Some(req.version),
        cert_fingerprint: crate::tls::fingerprint(&der),
        state: "registered".into(),
        registered_at_ms: now_ms(),
        last_heartbeat_ms: None,
        drained: false,
    };
    let labels = s
        .engine
        .store()
        .join_agent(&hash_secret(&req.token), &agent)
        .map_err(|e| match e {
            StoreError::NotFound(m) | StoreError::Conflict(m) => ApiError::unauthorized(m),
            other => other.into(),
        })?;
    let joined = AgentRow {
        labels: labels.clone(),
        ..agent
    };
    s.engine.agent_joined(&joined)?;
    tracing::info!(agent = %agent_id, labels = %crate::engine::format_labels(&labels), "Agent joined.");
    json(
        StatusCode::CREATED,
        &JoinResponse {
            agent_id,
            certificate,
            ca_certificate: s.certs.ca_pem().to_string(),
            labels,
        },
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TokenRequest {
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    ttl_seconds: Option<u64>,
}

fn create_join_token(req: TokenRequest, s: ApiState) -> ApiResult {
    let ttl = req.ttl_seconds.unwrap_or(3600);
    if ttl == 0 || ttl > 30 * 24 * 3600 {
        return Err(ApiError {
            errors: vec![FieldError {
                path: "ttlSeconds".into(),
                message: "must be between 1 second and 30 days".into(),
            }],
            ..ApiError::bad_request("ttlSeconds: must be between 1 second and 30 days")
        });
    }
    let token = new_secret("sjt");
    let expires_at_ms = now_ms() + (ttl as i64) * 1000;
    s.engine
        .store()
        .insert_join_token(&hash_secret(&token), &req.labels, expires_at_ms)?;
    json(
        StatusCode::CREATED,
        &serde_json::json!({
            "token": token,
            "caFingerprint": s.certs.ca_fingerprint(),
            "expiresAtMs": expires_at_ms,
            "labels": req.labels,
        }),
    )
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AgentView {
    #[serde(flatten)]
    agent: AgentRow,
    running: usize,
    /// What it holds now: each attempt with its pipeline, execution, stage and action.
    work: Vec<AgentWork>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AgentWork {
    attempt_id: i64,
    execution_id: String,
    pipeline_name: String,
    stage_index: i64,
    action_name: String,
    phase: String,
}

enum AgentControl {
    Drain,
    Undrain,
    Revoke,
}

fn agent_control(s: ApiState, id: &str, control: AgentControl) -> ApiResult {
    let agent = match control {
        AgentControl::Drain => s.engine.set_drained(id, true)?,
        AgentControl::Undrain => s.engine.set_drained(id, false)?,
        AgentControl::Revoke => s.engine.revoke_agent(id)?,
    };
    json(StatusCode::OK, &agent)
}

fn list_agents(s: ApiState) -> ApiResult {
    let store = s.engine.store();
    let mut held = s.engine.agent_work();
    let mut agents = Vec::new();
    for agent in store.list_agents()? {
        let ids = held.remove(&agent.id).unwrap_or_default();
        let mut work = Vec::new();
        for id in &ids {
            // An attempt that ended between the two reads is simply not listed.
            let Ok(attempt) = store.attempt(*id) else {
                continue;
            };
            let Ok(execution) = store.execution(&attempt.execution_id) else {
                continue;
            };
            work.push(AgentWork {
                attempt_id: attempt.id,
                execution_id: attempt.execution_id,
                pipeline_name: execution.pipeline_name,
                stage_index: attempt.stage_index,
                action_name: attempt.action_name,
                phase: attempt.phase,
            });
        }
        agents.push(AgentView {
            running: ids.len(),
            work,
            agent,
        });
    }
    json(StatusCode::OK, &agents)
}

// ---- blobs -----------------------------------------------------------------------

async fn put_blob<S, B>(digest: String, peer: Peer, s: ApiState, body: S) -> ApiResult
where
    S: futures_util::Stream<Item = Result<B, warp::Error>> + Unpin,
    B: bytes::Buf,
{
    agent_of(&s, &peer)?;
    match s.engine.blobs().put(&digest, body).await {
        Ok(size) => json(
            StatusCode::CREATED,
            &serde_json::json!({"sha256": digest, "size": size}),
        ),
        Err(e @ crate::blobs::BlobError::BadDigest(_)) => Err(ApiError::bad_request(e.to_string())),
        Err(e @ crate::blobs::BlobError::Mismatch { .. }) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "digest_mismatch",
            e.to_string(),
        )),
        Err(e @ crate::blobs::BlobError::Transfer(_)) => Err(ApiError::bad_request(e.to_string())),
        Err(e) => Err(ApiError::internal(e)),
    }
}

/// Lets an agent (certificate) or a user (API token) download artifacts, and names a
/// missing one.
fn blob_reader(state: ApiState) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::path::peek()
        .and(peer())
        .and(bearer())
        .and(with(state))
        .and_then(
            |tail: warp::path::Peek, peer: Peer, token: Option<String>, s: ApiState| async move {
                let digest = tail.as_str().to_string();
                let allowed = agent_of(&s, &peer).is_ok()
                    || match token {
                        Some(token) => s
                            .engine
                            .store()
                            .api_token(&hash_secret(&token))
                            .map_err(|e| warp::reject::custom(Internal(e.to_string())))?
                            .is_some(),
                        None => false,
                    };
                if !allowed {
                    return Err(warp::reject::custom(Unauthorized(
                        "downloading artifacts needs an agent certificate or an API token".into(),
                    )));
                }
                match s.engine.blobs().size(&digest) {
                    Ok(Some(_)) => Ok(()),
                    Ok(None) => Err(warp::reject::custom(MissingBlob(format!(
                        "no artifact with sha256 {digest} is stored"
                    )))),
                    Err(e) => Err(warp::reject::custom(MissingBlob(e.to_string()))),
                }
            },
        )
        .untuple_one()
}

// ---- pipelines -------------------------------------------------------------------

#[derive(Deserialize)]
struct FormatQuery {
    format: Option<String>,
}

#[derive(Deserialize)]
struct VersionQuery {
    version: Option<i64>,
}

fn parse_format(q: &FormatQuery) -> Result<Option<sluice_pipeline::Format>, ApiError> {
    match q.format.as_deref() {
        None => Ok(None),
        Some("yaml") | Some("yml") => Ok(Some(sluice_pipeline::Format::Yaml)),
        Some("json") => Ok(Some(sluice_pipeline::Format::Json)),
        Some(other) => Err(ApiError::bad_request(format!(
            "format: \"{other}\" is not a definition format; use yaml or json"
        ))),
    }
}

fn diagnostics_error(diagnostics: sluice_pipeline::Diagnostics) -> ApiError {
    let count = diagnostics.0.len();
    ApiError {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        code: "invalid_definition",
        message: format!(
            "the pipeline definition has {count} problem{}",
            if count == 1 { "" } else { "s" }
        ),
        errors: diagnostics
            .0
            .into_iter()
            .map(|d| FieldError {
                path: d.path,
                message: d.message,
            })
            .collect(),
    }
}

fn body_text(body: &Bytes) -> Result<&str, ApiError> {
    std::str::from_utf8(body)
        .map_err(|e| ApiError::bad_request(format!("the definition is not UTF-8 text: {e}")))
}

fn validate_pipeline(s: ApiState, q: FormatQuery, body: Bytes) -> ApiResult {
    let format = parse_format(&q)?;
    let parsed =
        sluice_pipeline::parse_and_validate(body_text(&body)?, format, &s.engine.catalog())
            .map_err(diagnostics_error)?;
    json(
        StatusCode::OK,
        &serde_json::json!({"valid": true, "name": parsed.pipeline.name, "warnings": parsed.warnings.iter().map(|w| FieldError{path: w.path.clone(), message: w.message.clone()}).collect::<Vec<_>>()}),
    )
}

fn save_pipeline(s: ApiState, q: FormatQuery, body: Bytes, name: Option<String>) -> ApiResult {
    let format = parse_format(&q)?;
    let parsed =
        sluice_pipeline::parse_and_validate(body_text(&body)?, format, &s.engine.catalog())
            .map_err(diagnostics_error)?;
    let definition = parsed.pipeline.to_json();
    let version = match &name {
        None => s
            .engine
            .store()
            .create_pipeline(&parsed.pipeline.name, &definition)?,
        Some(name) if *name != parsed.pipeline.name => {
            return Err(ApiError {
                errors: vec![FieldError {
                    path: "name".into(),
                    message: format!(
                        "\"{}\" does not match the pipeline being updated (\"{name}\"); pipelines cannot be renamed",
                        parsed.pipeline.name
                    ),
                }],
                ..ApiError::bad_request(
                    "the definition's name does not match the pipeline being updated",
                )
            });
        }
        Some(name) => s.engine.store().update_pipeline(name, &definition)?,
    };
    let warnings: Vec<FieldError> = parsed
        .warnings
        .into_iter()
        .map(|w| FieldError {
            path: w.path,
            message: w.message,
        })
        .collect();
    json(
        if name.is_none() {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        &serde_json::json!({"name": parsed.pipeline.name, "version": version, "warnings": warnings}),
    )
}

fn get_pipeline(s: ApiState, name: String, q: VersionQuery) -> ApiResult {
    let stored = s.engine.store().pipeline_version(&name, q.version)?;
    let definition: serde_json::Value =
        serde_json::from_str(&stored.definition).map_err(ApiError::internal)?;
    json(
        StatusCode::OK,
        &serde_json::json!({
            "name": stored.name,
            "version": stored.version,
            "createdAtMs": stored.created_at_ms,
            "definition": definition,
        }),
    )
}

fn pipeline_versions(s: ApiState, name: String) -> ApiResult {
    let versions = s.engine.store().pipeline_versions(&name)?;
    json(StatusCode::OK, &versions)
}

// ---- executions ------------------------------------------------------------------

/// `GET /api/v1/executions`: newest first, filtered, one keyset page (by `seq`).
#[derive(Deserialize)]
struct ListQuery {
    pipeline: Option<String>,
    /// Only this status (Succeeded, Failed, InProgress, ...).
    status: Option<String>,
    /// Only this trigger type (StartPipelineExecution, Webhook, Schedule, ...).
    trigger: Option<String>,
    /// Started at or after (ms since epoch).
    from: Option<i64>,
    /// Started before (ms since epoch, exclusive).
    to: Option<i64>,
    /// The older page: `seq` below this.
    before: Option<i64>,
    /// The newer page: `seq` above this.
    after: Option<i64>,
    limit: Option<i64>,
}

fn list_executions(s: ApiState, q: ListQuery) -> ApiResult {
    let page = match (q.before, q.after) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "before and after: give one of them (the older or the newer page), not both",
            ));
        }
        (Some(seq), None) => crate::store::HistoryPage::Before(seq),
        (None, Some(seq)) => crate::store::HistoryPage::After(seq),
        (None, None) => crate::store::HistoryPage::Newest,
    };
    fn empty(v: &Option<String>) -> Option<&str> {
        v.as_deref().filter(|v| !v.is_empty())
    }
    let filter = crate::store::ExecutionFilter {
        pipeline: empty(&q.pipeline),
        status: empty(&q.status),
        trigger_type: empty(&q.trigger),
        started_from_ms: q.from,
        started_to_ms: q.to,
    };
    let rows =
        s.engine
            .store()
            .execution_history(&filter, page, q.limit.unwrap_or(50).clamp(1, 500))?;
    json(StatusCode::OK, &rows)
}

#[derive(Deserialize)]
struct WaitQuery {
    /// Long-poll: return when the execution changes or after this many seconds.
    wait: Option<u64>,
    /// With `wait`: the status summary the caller already has (`status|stages|attempts`).
    since: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExecutionDetail {
    #[serde(flatten)]
    execution: crate::store::ExecutionRow,
    /// A short token that changes whenever anything in the execution changes.
    revision: String,
    stages: Vec<StageDetail>,
    artifacts: Vec<crate::store::ArtifactRow>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StageDetail {
    name: String,
    status: Option<String>,
    started_at_ms: Option<i64>,
    finished_at_ms: Option<i64>,
    /// How the beforeEntry condition went: Succeeded, Failed, Skipped, Overridden.
    #[serde(skip_serializing_if = "Option::is_none")]
    condition_status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    summary: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    overridden_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    overridden_at_ms: Option<i64>,
    /// How the onSuccess condition went: InProgress, Succeeded, Failed, Overridden.
    #[serde(skip_serializing_if = "Option::is_none")]
    on_success_status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    on_success_summary: Option<String>,
    /// How onFailure went: InProgress, Succeeded (retried or rolled back), Failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    on_failure_status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    on_failure_summary: Option<String>,
    /// Retries of the stage, by hand and automatic.
    retries: i64,
    /// How many of them onFailure started.
    auto_retries: i64,
    actions: Vec<ActionDetail>,
    /// Runs of the stage's Commands rules (`condition:rule`), oldest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    rule_runs: Vec<AttemptView>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ActionDetail {
    name: String,
    run_order: u32,
    category: String,
    provider: String,
    status: Option<String>,
    attempts: Vec<AttemptView>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AttemptView {
    #[serde(flatten)]
    attempt: crate::store::AttemptRow,
    log: Option<crate::store::LogRow>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tests: Option<TestReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    approval: Option<crate::store::ApprovalRow>,
}

/// The test cases an attempt reported, summed up.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TestReport {
    total: usize,
    passed: usize,
    failed: usize,
    errored: usize,
    skipped: usize,
    duration_ms: u64,
    /// Failed and errored cases (the first 100).
    failures: Vec<sluice_proto::TestCase>,
    /// The five slowest cases.
    slowest: Vec<sluice_proto::TestCase>,
}

impl TestReport {
    fn of(cases: &[sluice_proto::TestCase]) -> TestReport {
        use sluice_proto::TestStatus;
        let count = |status| cases.iter().filter(|c| c.status == status).count();
        let mut slowest: Vec<sluice_proto::TestCase> = cases.to_vec();
        slowest.sort_by_key(|c| std::cmp::Reverse(c.duration_ms));
        slowest.truncate(5);
        TestReport {
            total: cases.len(),
            passed: count(TestStatus::Passed),
            failed: count(TestStatus::Failed),
            errored: count(TestStatus::Errored),
            skipped: count(TestStatus::Skipped),
            duration_ms: cases.iter().map(|c| c.duration_ms).sum(),
            failures: cases
                .iter()
                .filter(|c| matches!(c.status, TestStatus::Failed | TestStatus::Errored))
                .take(100)
                .cloned()
                .collect(),
            slowest,
        }
    }
}

fn execution_detail(s: &ApiState, id: &str) -> Result<ExecutionDetail, ApiError> {
    let store = s.engine.store();
    let execution = store.execution(id)?;
    let stored =
        store.pipeline_version(&execution.pipeline_name, Some(execution.pipeline_version))?;
    let def = sluice_pipeline::parse(&stored.definition, Some(sluice_pipeline::Format::Json))
        .map_err(|d| ApiError::internal(format!("stored definition unreadable: {d}")))?
        .pipeline;
    let stage_rows = store.stages(id)?;
    let attempts = store.attempts(id)?;
    let tests = store.test_cases(id)?;
    let approvals = store.approvals(id)?;
    let mut revision = Sha256::new();
    revision.update(execution.status.as_bytes());
    revision.update(execution.status_summary.as_deref().unwrap_or("").as_bytes());
    let mut stages = Vec::new();
    for (index, stage) in def.stages.iter().enumerate() {
        let row = stage_rows.iter().find(|r| r.stage_index == index as i64);
        revision.update(row.map(|r| r.status.as_str()).unwrap_or("-").as_bytes());
        for text in [
            row.and_then(|r| r.summary.as_deref()),
            row.and_then(|r| r.on_success_summary.as_deref()),
            row.and_then(|r| r.on_failure_summary.as_deref()),
        ] {
            revision.update(text.unwrap_or("-").as_bytes());
        }
        let mut rule_runs = Vec::new();
        for attempt in attempts
            .iter()
            .filter(|a| a.stage_index == index as i64 && a.rule_condition.is_some())
        {
            revision
                .update(format!("{}:{}:{}", attempt.id, attempt.status, attempt.phase).as_bytes());
            rule_runs.push(AttemptView {
                log: store.log(attempt.id)?,
                tests: None,
                approval: None,
                attempt: attempt.clone(),
            });
        }
        let mut actions = Vec::new();
        for action in &stage.actions {
            let mut views = Vec::new();
            for attempt in attempts.iter().filter(|a| {
                a.stage_index == index as i64
                    && a.action_name == action.name
                    && a.rule_condition.is_none()
            }) {
                revision.update(
                    format!("{}:{}:{}", attempt.id, attempt.status, attempt.phase).as_bytes(),
                );
                views.push(AttemptView {
                    log: store.log(attempt.id)?,
                    tests: tests.get(&attempt.id).map(|cases| TestReport::of(cases)),
                    approval: approvals.get(&attempt.id).cloned(),
                    attempt: attempt.clone(),
                });
            }
            actions.push(ActionDetail {
                name: action.name.clone(),
                run_order: action.run_order,
                category: action.action_type_id.category.to_string(),
                provider: action.action_type_id.provider.clone(),
                status: views.last().map(|v| v.attempt.status.clone()),
                attempts: views,
            });
        }
        stages.push(StageDetail {
            name: stage.name.clone(),
            status: row.map(|r| r.status.clone()),
            started_at_ms: row.and_then(|r| r.started_at_ms),
            finished_at_ms: row.and_then(|r| r.finished_at_ms),
            condition_status: row.and_then(|r| r.condition_status.clone()),
            summary: row.and_then(|r| r.summary.clone()),
            overridden_by: row.and_then(|r| r.overridden_by.clone()),
            overridden_at_ms: row.and_then(|r| r.overridden_at_ms),
            on_success_status: row.and_then(|r| r.on_success_status.clone()),
            on_success_summary: row.and_then(|r| r.on_success_summary.clone()),
            on_failure_status: row.and_then(|r| r.on_failure_status.clone()),
            on_failure_summary: row.and_then(|r| r.on_failure_summary.clone()),
            retries: row.map_or(0, |r| r.retries),
            auto_retries: row.map_or(0, |r| r.auto_retries),
            actions,
            rule_runs,
        });
    }
    Ok(ExecutionDetail {
        artifacts: store.artifacts(id)?,
        revision: hex::encode(&revision.finalize()[..8]),
        execution,
        stages,
    })
}

async fn get_execution(s: ApiState, id: String, q: WaitQuery) -> ApiResult {
    let mut events = s.engine.subscribe();
    let detail = execution_detail(&s, &id)?;
    let Some(wait) = q.wait else {
        return json(StatusCode::OK, &detail);
    };
    if q.since.as_deref() != Some(detail.revision.as_str()) {
        return json(StatusCode::OK, &detail);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait.min(60));
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Err(_) => break,
            Ok(Ok(Event::Execution(changed))) if changed == id => break,
            Ok(Ok(_)) => continue,
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => break,
            Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => break,
        }
    }
    json(StatusCode::OK, &execution_detail(&s, &id)?)
}

#[derive(Deserialize)]
struct LogQuery {
    offset: Option<u64>,
    /// Long-poll: wait up to this many seconds for bytes past `offset`.
    wait: Option<u64>,
}

async fn get_log(s: ApiState, execution_id: String, attempt_id: i64, q: LogQuery) -> ApiResult {
    let mut events = s.engine.subscribe();
    let attempt = s.engine.store().attempt(attempt_id)?;
    if attempt.execution_id != execution_id {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("attempt {attempt_id} is not part of execution {execution_id}"),
        ));
    }
    let offset = q.offset.unwrap_or(0);
    let read = |s: &ApiState| -> Result<Vec<u8>, ApiError> {
        s.engine
            .logs()
            .read(&execution_id, attempt_id, offset, 1 << 20)
            .map_err(ApiError::internal)
    };
    let mut data = read(&s)?;
    if data.is_empty()
        && attempt.phase != crate::store::phase::DONE
        && let Some(wait) = q.wait
    {
        {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(wait.min(60));
            loop {
                match tokio::time::timeout_at(deadline, events.recv()).await {
                    Err(_) => break,
                    Ok(Ok(Event::Log(a))) if a == attempt_id => break,
                    Ok(Ok(Event::Execution(e))) if e == execution_id => break,
                    Ok(Ok(_)) => continue,
                    Ok(Err(_)) => break,
                }
            }
            data = read(&s)?;
        }
    }
    // Re-read the attempt: it may have finished while we waited.
    let attempt = s.engine.store().attempt(attempt_id)?;
    let log = s.engine.store().log(attempt_id)?;
    let state = match (
        attempt.phase.as_str(),
        log.as_ref().and_then(|l| l.complete),
    ) {
        ("done", Some(true)) => "complete",
        ("done", _) => "incomplete",
        _ => "running",
    };
    let next = offset + data.len() as u64;
    let mut response = Response::new(data.into());
    let headers = response.headers_mut();
    headers.insert(
        "content-type",
        warp::http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert("x-log-next-offset", warp::http::HeaderValue::from(next));
    headers.insert("x-log-state", warp::http::HeaderValue::from_static(state));
    Ok(response)
}

/// `GET /api/v1/executions/{id}/artifacts/{name}`: the tar archive of an artifact the
/// execution produced, streamed from the artifact store as a download.
async fn get_artifact(s: ApiState, execution_id: String, name: String) -> ApiResult {
    use tokio::io::AsyncReadExt;
    let name = percent_decode(&name);
    let store = s.engine.store();
    let Some(artifact) = store
        .artifacts(&execution_id)?
        .into_iter()
        .find(|a| a.name == name)
    else {
        // Tell an unknown execution apart from an unknown artifact.
        store.execution(&execution_id)?;
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("execution {execution_id} has no artifact named {name:?}"),
        ));
    };
    let path = s
        .engine
        .blobs()
        .path(&artifact.sha256)
        .map_err(ApiError::internal)?;
    let file = match tokio::fs::File::open(&path).await {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!(
                    "the archive of artifact {name:?} (sha256 {}) is no longer stored",
                    artifact.sha256
                ),
            ));
        }
        Err(e) => return Err(ApiError::internal(format!("{}: {e}", path.display()))),
    };
    let length = file.metadata().await.map(|m| m.len()).ok();
    // Read in 64 KiB chunks; a read error ends the body (the client sees it cut short).
    let chunks = futures_util::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buf = vec![0u8; 64 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(Bytes::from(buf)), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    let mut response = warp::reply::stream(chunks).into_response();
    let headers = response.headers_mut();
    use warp::http::HeaderValue;
    headers.insert(
        "content-type",
        HeaderValue::from_static("application/x-tar"),
    );
    if let Some(length) = length {
        headers.insert("content-length", HeaderValue::from(length));
    }
    // A file name without quotes, backslashes or anything outside printable ASCII.
    let file_name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{file_name}.tar\"")) {
        headers.insert("content-disposition", value);
    }
    if let Ok(value) = HeaderValue::from_str(&artifact.sha256) {
        headers.insert("x-artifact-sha256", value);
    }
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    Ok(response)
}

/// Decodes `%XX` escapes in a path segment (warp hands segments over as sent).
fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).and_then(|b| hex(*b)),
                bytes.get(i + 2).and_then(|b| hex(*b)),
            )
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---- plugins ---------------------------------------------------------------------

impl From<crate::plugins::InstallError> for ApiError {
    fn from(err: crate::plugins::InstallError) -> ApiError {
        use crate::plugins::InstallError;
        match err {
            InstallError::Manifest(e) => ApiError {
                errors: e
                    .problems
                    .iter()
                    .map(|m| FieldError {
                        path: "manifest".into(),
                        message: m.clone(),
                    })
                    .collect(),
                ..ApiError::new(StatusCode::BAD_REQUEST, "invalid_manifest", e.to_string())
            },
            e @ InstallError::Component { .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_plugin", e.to_string())
            }
            InstallError::Grants { plugin, problems } => ApiError {
                errors: problems
                    .iter()
                    .map(|m| FieldError {
                        path: "grants".into(),
                        message: m.clone(),
                    })
                    .collect(),
                ..ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "grants",
                    format!(
                        "plugin {plugin} cannot be installed with these grants: {}",
                        problems.join("; ")
                    ),
                )
            },
            InstallError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            InstallError::Store(e) => e.into(),
            InstallError::Blob(e) => ApiError::internal(e),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct InstallRequest {
    /// The text of plugin.toml.
    manifest: String,
    /// The WASM component, base64.
    wasm_base64: String,
    /// `kind:name` grants.
    #[serde(default)]
    grants: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantsRequest {
    grants: Vec<String>,
}

/// An installed plugin as the API shows it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PluginView {
    id: String,
    version: String,
    api_version: String,
    owner: String,
    provider: String,
    categories: Vec<String>,
    description: String,
    idempotent: bool,
    builtin: bool,
    sha256: String,
    size: i64,
    installed_at_ms: i64,
    /// What it asks for.
    capabilities: sluice_pipeline::manifest::Capabilities,
    /// What it was granted, as `kind:name`.
    grants: Vec<String>,
    config: Vec<sluice_pipeline::manifest::ConfigField>,
}

impl PluginView {
    fn of(p: &crate::plugins::InstalledPlugin) -> PluginView {
        let m = &p.manifest;
        PluginView {
            id: p.row.id.clone(),
            version: p.row.version.clone(),
            api_version: m.api_version.clone(),
            owner: m.owner.clone(),
            provider: m.provider.clone(),
            categories: m.categories.clone(),
            description: m.description.clone(),
            idempotent: m.idempotent,
            builtin: p.row.builtin,
            sha256: p.row.sha256.clone(),
            size: p.row.size,
            installed_at_ms: p.row.installed_at_ms,
            capabilities: m.capabilities.clone(),
            grants: crate::plugins::grant_list(&p.row.grants)
                .iter()
                .map(ToString::to_string)
                .collect(),
            config: m.config.clone(),
        }
    }
}

fn plugin_views(s: ApiState, id: Option<String>) -> ApiResult {
    let registry = s.engine.registry();
    let views: Vec<PluginView> = registry
        .plugins()
        .iter()
        .filter(|p| id.as_ref().is_none_or(|id| &p.row.id == id))
        .map(PluginView::of)
        .collect();
    if let Some(id) = id
        && views.is_empty()
    {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("plugin {id} is not installed; see `sluice plugin list`"),
        ));
    }
    json(StatusCode::OK, &views)
}

fn parse_grants(list: &[String]) -> Result<Vec<sluice_pipeline::manifest::Grant>, ApiError> {
    let mut grants = Vec::new();
    let mut errors = Vec::new();
    for (i, text) in list.iter().enumerate() {
        match text.parse() {
            Ok(g) => grants.push(g),
            Err(message) => errors.push(FieldError {
                path: format!("grants[{i}]"),
                message,
            }),
        }
    }
    if errors.is_empty() {
        Ok(grants)
    } else {
        let message = errors
            .iter()
            .map(|e| format!("{}: {}", e.path, e.message))
            .collect::<Vec<_>>()
            .join("; ");
        Err(ApiError {
            errors,
            ..ApiError::bad_request(message)
        })
    }
}

async fn install_plugin(s: ApiState, req: InstallRequest) -> ApiResult {
    use base64::Engine as _;
    let wasm = base64::engine::general_purpose::STANDARD
        .decode(req.wasm_base64.trim())
        .map_err(|e| ApiError::bad_request(format!("wasmBase64: not valid base64: {e}")))?;
    let grants = parse_grants(&req.grants)?;
    let engine = s.engine.clone();
    // Parsing and storing a component of megabytes is blocking work.
    let installed =
        tokio::task::spawn_blocking(move || engine.install_plugin(&req.manifest, &wasm, &grants))
            .await
            .map_err(ApiError::internal)??;
    json(StatusCode::CREATED, &PluginView::of(&installed))
}

fn set_grants(s: ApiState, id: String, version: String, req: GrantsRequest) -> ApiResult {
    let grants = parse_grants(&req.grants)?;
    let changed = s.engine.set_plugin_grants(&id, &version, &grants)?;
    json(StatusCode::OK, &PluginView::of(&changed))
}

// ---- secrets ---------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretRequest {
    value: String,
}

fn secret_names(s: ApiState) -> ApiResult {
    let names: Vec<serde_json::Value> = s
        .engine
        .store()
        .list_secrets()?
        .into_iter()
        .map(|row| {
            serde_json::json!({
                "name": row.name,
                "createdAtMs": row.created_at_ms,
                "updatedAtMs": row.updated_at_ms,
            })
        })
        .collect();
    json(StatusCode::OK, &names)
}

fn put_secret(s: ApiState, name: String, req: SecretRequest) -> ApiResult {
    if !sluice_pipeline::manifest::is_secret_name(&name) {
        return Err(ApiError::bad_request(format!(
            "secret name {name:?} is not valid: use 1 to 128 letters, digits and _, not starting with a digit"
        )));
    }
    if req.value.is_empty() {
        return Err(ApiError::bad_request(format!(
            "secret {name}: the value is empty; remove a secret with `sluice secret rm {name}`"
        )));
    }
    s.engine.set_secret(&name, &req.value)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- stopping --------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StopRequest {
    /// Abandon running actions instead of waiting for them.
    #[serde(default)]
    abandon: bool,
    /// Why, for the history (at most 200 characters).
    #[serde(default)]
    reason: String,
}

fn stop_execution(s: ApiState, id: String, req: StopRequest) -> ApiResult {
    if req.reason.chars().count() > 200 {
        return Err(ApiError {
            errors: vec![FieldError {
                path: "reason".into(),
                message: "must be at most 200 characters".into(),
            }],
            ..ApiError::bad_request("reason: must be at most 200 characters")
        });
    }
    let execution = s.engine.stop_execution(&id, req.abandon, &req.reason)?;
    json(StatusCode::OK, &execution)
}

// ---- starting --------------------------------------------------------------------

/// CodePipeline's StartPipelineExecution body; every field optional.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct StartRequest {
    #[serde(default)]
    variables: Vec<NameValue>,
    #[serde(default)]
    source_revisions: Vec<SourceRevisionOverride>,
    #[serde(default)]
    client_request_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NameValue {
    name: String,
    value: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SourceRevisionOverride {
    action_name: String,
    revision_type: String,
    revision_value: String,
}

fn start_execution(s: ApiState, name: String, who: Option<String>, body: Bytes) -> ApiResult {
    let request: StartRequest = if body.iter().all(u8::is_ascii_whitespace) {
        StartRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("malformed start request: {e}")))?
    };
    let mut options = crate::engine::StartOptions {
        client_request_token: request.client_request_token,
        ..Default::default()
    };
    for v in request.variables {
        if options.variables.insert(v.name.clone(), v.value).is_some() {
            return Err(ApiError::bad_request(format!(
                "variables: {} is given twice",
                v.name
            )));
        }
    }
    for r in request.source_revisions {
        if r.revision_type != "COMMIT_ID" {
            return Err(ApiError::bad_request(format!(
                "sourceRevisions.{}: revisionType {:?} is not supported; use COMMIT_ID",
                r.action_name, r.revision_type
            )));
        }
        options
            .source_revisions
            .insert(r.action_name, r.revision_value);
    }
    let detail = s.who(who);
    let (execution, created) =
        s.engine
            .start_execution_with(&name, "StartPipelineExecution", &detail, &options)?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    json(status, &execution)
}

// ---- retrying --------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RetryRequest {
    /// FAILED_ACTIONS or ALL_ACTIONS.
    retry_mode: String,
}

fn retry_stage(s: ApiState, id: String, stage: String, req: RetryRequest) -> ApiResult {
    let all = match req.retry_mode.as_str() {
        "FAILED_ACTIONS" => false,
        "ALL_ACTIONS" => true,
        other => {
            return Err(ApiError {
                errors: vec![FieldError {
                    path: "retryMode".into(),
                    message: format!("{other:?} is not FAILED_ACTIONS or ALL_ACTIONS"),
                }],
                ..ApiError::bad_request(format!(
                    "retryMode: {other:?} is not FAILED_ACTIONS or ALL_ACTIONS"
                ))
            });
        }
    };
    let execution = s.engine.retry_stage(&id, &stage, all)?;
    json(StatusCode::OK, &execution)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct OverrideRequest {
    /// BEFORE_ENTRY or ON_SUCCESS; without it, whichever of the two failed.
    #[serde(default)]
    condition_type: Option<String>,
}

fn override_condition(
    s: ApiState,
    id: String,
    stage: String,
    who: &str,
    req: OverrideRequest,
) -> ApiResult {
    let kind = match req.condition_type.as_deref() {
        None => None,
        Some("BEFORE_ENTRY") => Some(Kind::BeforeEntry),
        Some("ON_SUCCESS") => Some(Kind::OnSuccess),
        Some(other) => {
            let message = format!("{other:?} is not BEFORE_ENTRY or ON_SUCCESS");
            return Err(ApiError {
                errors: vec![FieldError {
                    path: "conditionType".into(),
                    message: message.clone(),
                }],
                ..ApiError::bad_request(format!("conditionType: {message}"))
            });
        }
    };
    let execution = s.engine.override_condition(&id, &stage, kind, who)?;
    json(StatusCode::OK, &execution)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RollbackRequest {
    stage_name: String,
    #[serde(default)]
    target_pipeline_execution_id: Option<String>,
}

fn rollback_stage(s: ApiState, name: String, who: &str, req: RollbackRequest) -> ApiResult {
    let execution = s.engine.rollback_stage(
        &name,
        &req.stage_name,
        req.target_pipeline_execution_id.as_deref(),
        who,
    )?;
    json(StatusCode::CREATED, &execution)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TransitionRequest {
    enabled: bool,
    #[serde(default)]
    reason: String,
}

// ---- approvals -------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApprovalRequest {
    stage: String,
    action: String,
    /// Approved or Rejected.
    decision: String,
    #[serde(default)]
    comment: String,
}

fn decide_approval(
    s: ApiState,
    id: String,
    who: Option<String>,
    req: ApprovalRequest,
) -> ApiResult {
    let approve = match req.decision.as_str() {
        "Approved" => true,
        "Rejected" => false,
        other => {
            return Err(ApiError::bad_request(format!(
                "decision: {other:?} is not Approved or Rejected"
            )));
        }
    };
    let who = s.who(who);
    let execution =
        s.engine
            .decide_approval(&id, &req.stage, &req.action, approve, &req.comment, &who)?;
    json(StatusCode::OK, &execution)
}

// ---- incoming webhooks (git triggers) ----------------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateWebhookRequest {
    pipeline: String,
    kind: String,
    #[serde(default)]
    secret_name: Option<String>,
}

/// `POST /webhooks/{id}` (signed, no API token) and the management routes under
/// `/api/v1/webhooks`.
fn trigger_webhook_routes(state: &ApiState) -> Vec<BoxedFilter<(Response,)>> {
    let api = warp::path("api").and(warp::path("v1"));
    let receive = warp::path!("webhooks" / String)
        .and(warp::post())
        .and(warp::header::headers_cloned())
        .and(warp::body::content_length_limit(4 << 20))
        .and(warp::body::bytes())
        .and(with(state.clone()))
        .map(
            |id: String, headers: warp::http::HeaderMap, body: Bytes, s: ApiState| {
                let (status, body) = crate::webhooks::receive(&s.engine, &id, &headers, &body);
                let status =
                    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                warp::reply::with_status(warp::reply::json(&body), status).into_response()
            },
        );
    let create = api
        .and(warp::path!("webhooks"))
        .and(warp::post())
        .and(authenticated(state.clone()))
        .and(json_body())
        .and_then(|s: ApiState, req: CreateWebhookRequest| async move {
            respond(
                crate::webhooks::create(
                    &s.engine,
                    &req.pipeline,
                    &req.kind,
                    req.secret_name.as_deref(),
                )
                .map_err(ApiError::from)
                .and_then(|created| {
                    let path = format!("/webhooks/{}", created.webhook.id);
                    json(
                        StatusCode::CREATED,
                        &serde_json::json!({
                            "webhook": created.webhook,
                            "path": path,
                            "secret": created.secret,
                        }),
                    )
                }),
            )
        });
    let list = api
        .and(warp::path!("webhooks"))
        .and(warp::get())
        .and(authenticated(state.clone()))
        .and_then(|s: ApiState| async move {
            respond(
                s.engine
                    .store()
                    .trigger_webhooks()
                    .map_err(ApiError::from)
                    .and_then(|w| json(StatusCode::OK, &w)),
            )
        });
    let remove = api
        .and(warp::path!("webhooks" / String))
        .and(warp::delete())
        .and(authenticated(state.clone()))
        .and_then(|id: String, s: ApiState| async move {
            respond(
                s.engine
                    .store()
                    .delete_trigger_webhook(&id)
                    .map_err(ApiError::from)
                    .map(|()| StatusCode::NO_CONTENT.into_response()),
            )
        });
    let deliveries = api
        .and(warp::path!("webhooks" / String / "deliveries"))
        .and(warp::get())
        .and(authenticated(state.clone()))
        .and_then(|id: String, s: ApiState| async move {
            respond(
                s.engine
                    .store()
                    .deliveries(&id, 100)
                    .map_err(ApiError::from)
                    .and_then(|d| json(StatusCode::OK, &d)),
            )
        });
    vec![
        receive.boxed(),
        create.boxed(),
        list.boxed(),
        remove.boxed(),
        deliveries.boxed(),
    ]
}
