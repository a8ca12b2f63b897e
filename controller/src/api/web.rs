//! The web UI: its files, embedded in the binary and served as they are (no build
//! step, no CDN), and the sign-in session routes it uses.
//!
//! - `GET /` is the UI's page; `GET /ui/...` its scripts, styles and the vendored
//!   Preact + htm. The page refers to them under `/ui/v-<digest of every file>/`,
//!   served as immutable (cached for a year, never revalidated): a new build has a new
//!   digest, so a browser fetches its files anew. The page itself, and the files under
//!   plain `/ui/`, carry an ETag (their SHA-256) and are revalidated on every use.
//! - `POST /api/v1/session` signs in (user name and password) and sets the session
//!   cookie: Secure, HttpOnly, SameSite=Strict, holding a random token of which the
//!   controller keeps only the hash. `GET /api/v1/session` says who is signed in and
//!   returns the CSRF token every change must carry (`X-CSRF-Token`);
//!   `DELETE /api/v1/session` signs out.
//! - `GET /api/v1/overview` is every pipeline with its latest execution, and
//!   `GET /api/v1/events/latest` the id to follow the event stream from.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use warp::filters::BoxedFilter;
use warp::http::{HeaderValue, StatusCode};
use warp::reply::Response;
use warp::{Filter, Reply};

use super::{ApiError, ApiResult, ApiState, Caller, authenticated, respond, with};
use crate::accounts::{AccountError, SESSION_COOKIE, permissions};

/// The UI's files: path under `/ui/`, content type, content.
const FILES: &[(&str, &str, &[u8])] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("../../ui/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/app.js"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/api.js"),
    ),
    (
        "status.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/status.js"),
    ),
    (
        "log.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/log.js"),
    ),
    (
        "pages/signin.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/pages/signin.js"),
    ),
    (
        "pages/overview.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/pages/overview.js"),
    ),
    (
        "pages/pipeline.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/pages/pipeline.js"),
    ),
    (
        "pages/execution.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/pages/execution.js"),
    ),
    (
        "pages/history.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/pages/history.js"),
    ),
    (
        "pages/agents.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/pages/agents.js"),
    ),
    (
        "pages/plugins.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/pages/plugins.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_bytes!("../../ui/style.css"),
    ),
    (
        "icon.svg",
        "image/svg+xml",
        include_bytes!("../../ui/icon.svg"),
    ),
    (
        "vendor/preact-htm.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/vendor/preact-htm.js"),
    ),
];

/// Only the controller's own files, scripts and connections; no framing.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     frame-ancestors 'none'; form-action 'self'";

struct Asset {
    content_type: &'static str,
    body: Vec<u8>,
    etag: String,
}

/// The UI's files by path, and the version prefix (`v-` and a digest of them all) the
/// page loads them under.
struct Assets {
    files: HashMap<&'static str, Asset>,
    version: String,
}

fn assets() -> &'static Assets {
    static ASSETS: OnceLock<Assets> = OnceLock::new();
    ASSETS.get_or_init(|| {
        let mut all = Sha256::new();
        for (path, _, body) in FILES {
            all.update(path.as_bytes());
            all.update((body.len() as u64).to_le_bytes());
            all.update(body);
        }
        let version = format!("v-{}", hex::encode(&all.finalize()[..8]));
        let files = FILES
            .iter()
            .map(|(path, content_type, body)| {
                let body = if *path == "index.html" {
                    // The page loads its scripts and styles under the version prefix;
                    // their relative imports stay under it.
                    String::from_utf8_lossy(body)
                        .replace("\"/ui/", &format!("\"/ui/{version}/"))
                        .into_bytes()
                } else {
                    body.to_vec()
                };
                let etag = format!("\"{}\"", hex::encode(&Sha256::digest(&body)[..12]));
                (
                    *path,
                    Asset {
                        content_type,
                        body,
                        etag,
                    },
                )
            })
            .collect();
        Assets { files, version }
    })
}

fn serve(path: &str, if_none_match: Option<String>) -> Response {
    let assets = assets();
    let (path, immutable) = match path.split_once('/') {
        Some((version, rest)) if version == assets.version => (rest, true),
        Some((version, _)) if version.starts_with("v-") => {
            return ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!(
                    "UI files of version {version} are not served: this controller serves {}; reload the page",
                    assets.version
                ),
            )
            .into_response();
        }
        _ => (path, false),
    };
    let Some(asset) = assets.files.get(path) else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no UI file {path}"),
        )
        .into_response();
    };
    let mut response = if if_none_match.as_deref() == Some(asset.etag.as_str()) {
        let mut r = Response::new(Vec::new().into());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        let mut r = Response::new(asset.body.clone().into());
        r.headers_mut()
            .insert("content-type", HeaderValue::from_static(asset.content_type));
        r
    };
    let headers = response.headers_mut();
    if let Ok(etag) = HeaderValue::from_str(&asset.etag) {
        headers.insert("etag", etag);
    }
    headers.insert(
        "cache-control",
        HeaderValue::from_static(if immutable {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        }),
    );
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    response
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignIn {
    username: String,
    password: String,
}

fn session_body(name: &str, role: &str, csrf_token: &str) -> serde_json::Value {
    json!({
        "user": {"name": name, "role": role},
        "permissions": permissions(role),
        "csrfToken": csrf_token,
    })
}

fn cookie(value: &str, max_age: Option<u64>) -> String {
    let age = max_age
        .map(|s| format!("; Max-Age={s}"))
        .unwrap_or_default();
    format!("{SESSION_COOKIE}={value}; Path=/; Secure; HttpOnly; SameSite=Strict{age}")
}

fn sign_in(s: ApiState, body: SignIn) -> ApiResult {
    let session = s
        .accounts
        .sign_in(&body.username, &body.password)
        .map_err(|e| match e {
            AccountError::BadCredentials => {
                ApiError::new(StatusCode::UNAUTHORIZED, "sign_in_failed", e.to_string())
            }
            AccountError::LockedOut(..) => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_attempts",
                e.to_string(),
            ),
            other => ApiError::internal(other.to_string()),
        })?;
    let mut response = warp::reply::json(&session_body(
        &session.user.name,
        &session.user.role,
        &session.csrf_token,
    ))
    .into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie(&session.token, None)) {
        response.headers_mut().insert("set-cookie", value);
    }
    Ok(response)
}

fn current_session(s: ApiState, token: Option<String>) -> ApiResult {
    let Caller::User { name, role } = &s.caller else {
        return Err(ApiError::bad_request(
            "this request carries an API token, not a session; sign in with POST /api/v1/session",
        ));
    };
    // The caller is a user only because this cookie's session was found; it can end in
    // between (sign-out elsewhere), which is a plain 401, and a store error is a 500.
    let session = match token {
        Some(t) => s
            .accounts
            .session(&t)
            .map_err(|e| ApiError::internal(format!("could not read the session: {e}")))?,
        None => None,
    };
    let Some((session, _)) = session else {
        return Err(ApiError::unauthorized(
            "your session has ended; sign in again".to_string(),
        ));
    };
    Ok(warp::reply::json(&session_body(name, role, &session.csrf_token)).into_response())
}

fn sign_out(s: ApiState, token: Option<String>) -> ApiResult {
    if let Some(token) = token {
        s.accounts
            .sign_out(&token)
            .map_err(|e| ApiError::internal(e.to_string()))?;
    }
    let mut response =
        warp::reply::with_status(warp::reply(), StatusCode::NO_CONTENT).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie("", Some(0))) {
        response.headers_mut().insert("set-cookie", value);
    }
    Ok(response)
}

/// The UI's routes and the session routes.
pub(super) fn routes(state: &ApiState) -> Vec<BoxedFilter<(Response,)>> {
    let page = warp::path::end()
        .and(warp::get())
        .and(warp::header::optional::<String>("if-none-match"))
        .map(|etag: Option<String>| serve("index.html", etag));
    let file = warp::path("ui")
        .and(warp::path::tail())
        .and(warp::get())
        .and(warp::header::optional::<String>("if-none-match"))
        .map(|tail: warp::path::Tail, etag: Option<String>| serve(tail.as_str(), etag));
    let session = warp::path!("api" / "v1" / "session");
    let sign_in = session
        .and(warp::post())
        .and(with(state.clone()))
        .and(warp::body::content_length_limit(16 * 1024))
        .and(warp::body::json())
        .map(|s: ApiState, body: SignIn| respond(sign_in(s, body)))
        .and_then(|r| async move { r });
    let who = session
        .and(warp::get())
        .and(authenticated(state.clone()))
        .and(warp::cookie::optional::<String>(SESSION_COOKIE))
        .and_then(|s: ApiState, token: Option<String>| async move {
            respond(current_session(s, token))
        });
    let sign_out = session
        .and(warp::delete())
        .and(authenticated(state.clone()))
        .and(warp::cookie::optional::<String>(SESSION_COOKIE))
        .and_then(|s: ApiState, token: Option<String>| async move { respond(sign_out(s, token)) });
    let overview = warp::path!("api" / "v1" / "overview")
        .and(warp::get())
        .and(authenticated(state.clone()))
        .and_then(|s: ApiState| async move {
            let store = s.engine.store();
            // The event id first: an event recorded while the overview is read is
            // then seen again by a stream started from it, never missed.
            respond(
                store
                    .last_event_id()
                    .and_then(|last| Ok((last, store.overview()?)))
                    .map_err(ApiError::from)
                    .map(|(last, rows)| {
                        warp::reply::json(&json!({"lastEventId": last, "pipelines": rows}))
                            .into_response()
                    }),
            )
        });
    let latest_event = warp::path!("api" / "v1" / "events" / "latest")
        .and(warp::get())
        .and(authenticated(state.clone()))
        .and_then(|s: ApiState| async move {
            respond(
                s.engine
                    .store()
                    .last_event_id()
                    .map_err(ApiError::from)
                    .map(|id| warp::reply::json(&json!({"id": id})).into_response()),
            )
        });
    vec![
        overview.boxed(),
        latest_event.boxed(),
        page.map(Reply::into_response).boxed(),
        file.map(Reply::into_response).boxed(),
        sign_in.boxed(),
        who.boxed(),
        sign_out.boxed(),
    ]
}

#[cfg(test)]
mod tests {
    use super::FILES;

    /// index.html preloads every module but app.js (which it loads), so a new page's
    /// module is fetched with the rest, not after the module that imports it.
    #[test]
    fn index_preloads_every_module() {
        let index = FILES
            .iter()
            .find(|(path, _, _)| *path == "index.html")
            .map(|(_, _, body)| String::from_utf8_lossy(body).to_string())
            .expect("index.html is served");
        for (path, content_type, _) in FILES {
            if !content_type.starts_with("text/javascript") || *path == "app.js" {
                continue;
            }
            let link = format!("<link rel=\"modulepreload\" href=\"/ui/{path}\">");
            assert!(index.contains(&link), "index.html lacks {link}");
        }
    }
}
