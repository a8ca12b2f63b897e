//! End-to-end tests of signing in to the web UI and of how the UI is served: the first
//! start's admin account, the session cookie's flags, CSRF protection on every change,
//! sign-out, the embedded files with their security headers, and API tokens still
//! working beside sessions. Real controller processes over real TLS.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sluice_e2e::*;

const PASSWORD: &str = "correct horse battery";

/// What a browser sends: a cookie and a CSRF token, if it has them.
struct Browser {
    api: ApiClient,
}

impl Browser {
    fn new(controller: &Controller) -> Browser {
        Browser {
            api: ApiClient::new(controller),
        }
    }

    /// Sends a request with optional cookie, CSRF token and JSON body; returns the
    /// status, the headers and the body.
    fn send(
        &self,
        method: Method,
        path: &str,
        cookie: Option<&str>,
        csrf: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, reqwest::header::HeaderMap, String) {
        let mut headers = Vec::new();
        if let Some(cookie) = cookie {
            headers.push(("cookie", cookie));
        }
        if let Some(csrf) = csrf {
            headers.push(("x-csrf-token", csrf));
        }
        let (status, headers, body) = self.api.send_json(method, path, &headers, body);
        (status, headers, String::from_utf8_lossy(&body).into_owned())
    }

    /// Signs in; returns the cookie pair (`sluice_session=...`), the Set-Cookie header
    /// and the session JSON.
    fn sign_in(&self, password: &str) -> (StatusCode, String, String, Value) {
        let (status, headers, body) = self.send(
            Method::POST,
            "/api/v1/session",
            None,
            None,
            Some(json!({"username": "admin", "password": password})),
        );
        let set_cookie = headers
            .get("set-cookie")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let pair = set_cookie.split(';').next().unwrap_or_default().to_string();
        (
            status,
            pair,
            set_cookie,
            serde_json::from_str(&body).unwrap(),
        )
    }
}

#[test]
fn a_signed_in_session_is_a_secure_cookie_and_every_change_needs_its_csrf_token() {
    let dir = tempfile::tempdir().unwrap();
    let (controller, _agent) = start_with_agent(dir.path(), &["--admin-password", PASSWORD], 1);
    let definition = Pipeline::new("web")
        .build("Build", "Make", "true")
        .write(dir.path());
    controller.create_pipeline(&definition);
    let browser = Browser::new(&controller);

    // A wrong password is refused without saying which part was wrong.
    let (status, pair, _, body) = browser.sign_in("not the password");
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(pair.is_empty());
    assert_eq!(body["code"], "sign_in_failed");
    assert_eq!(body["message"], "wrong user name or password");

    let (status, cookie, set_cookie, session) = browser.sign_in(PASSWORD);
    assert_eq!(status, StatusCode::OK, "{session}");
    assert!(cookie.starts_with("sluice_session=sws_"), "{set_cookie}");
    for flag in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(
            set_cookie.contains(flag),
            "{flag} missing from {set_cookie}"
        );
    }
    assert_eq!(session["user"]["name"], "admin");
    assert_eq!(session["user"]["role"], "admin");
    assert!(
        session["permissions"]
            .as_array()
            .unwrap()
            .contains(&json!("execution:start"))
    );
    let csrf = session["csrfToken"].as_str().unwrap().to_string();
    // Only the token's hash is stored.
    let stored: String = controller
        .db()
        .query_row("SELECT token_sha256 FROM web_sessions", [], |r| r.get(0))
        .unwrap();
    assert!(!cookie.contains(&stored));

    // Reads need only the cookie.
    let (status, _, body) =
        browser.send(Method::GET, "/api/v1/pipelines", Some(&cookie), None, None);
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _, body) = browser.send(Method::GET, "/api/v1/session", Some(&cookie), None, None);
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["csrfToken"],
        csrf.as_str()
    );

    // A change without the CSRF token (or with another) is refused, and nothing starts.
    for token in [None, Some("csrf_forged")] {
        let (status, _, body) = browser.send(
            Method::POST,
            "/api/v1/pipelines/web/executions",
            Some(&cookie),
            token,
            Some(json!({})),
        );
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert!(body.contains("X-CSRF-Token"), "{body}");
    }
    assert_eq!(
        controller
            .json(&["execution", "list"])
            .as_array()
            .unwrap()
            .len(),
        0
    );
    // With it, the change is made in the user's name.
    let (status, _, body) = browser.send(
        Method::POST,
        "/api/v1/pipelines/web/executions",
        Some(&cookie),
        Some(&csrf),
        Some(json!({})),
    );
    assert!(status.is_success(), "{status} {body}");
    let started: Value = serde_json::from_str(&body).unwrap();
    let id = started["pipelineExecutionId"]
        .as_str()
        .or(started["id"].as_str())
        .unwrap()
        .to_string();
    let done = controller.wait_finished(&id, Duration::from_secs(60));
    assert_eq!(done["status"], "Succeeded", "{done:#}");
    assert!(
        done["triggerDetail"].as_str().unwrap().contains("admin"),
        "{done:#}"
    );

    // The API token keeps working beside sessions, without a CSRF token.
    let text = ok(controller.cli().args(["pipeline", "start", "web"]));
    assert!(!text.trim().is_empty());

    // Signing out ends the session on the controller and clears the cookie.
    let (status, headers, _) = browser.send(
        Method::DELETE,
        "/api/v1/session",
        Some(&cookie),
        Some(&csrf),
        None,
    );
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(
        headers["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0"),
        "{headers:?}"
    );
    let (status, _, body) =
        browser.send(Method::GET, "/api/v1/pipelines", Some(&cookie), None, None);
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("session has ended"), "{body}");
}

#[test]
fn the_ui_is_served_from_the_binary_with_security_headers_and_etags() {
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(dir.path(), 0, &["--admin-password", PASSWORD]);
    let browser = Browser::new(&controller);
    let (status, headers, body) = browser.send(Method::GET, "/", None, None, None);
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    // The page loads its files under a version prefix (a digest of them all).
    let version = body
        .split(r#"<script type="module" src="/ui/"#)
        .nth(1)
        .and_then(|rest| rest.split_once("/app.js\""))
        .map(|(version, _)| version)
        .unwrap_or_else(|| panic!("no versioned app.js in {body}"));
    assert!(
        version.starts_with("v-") && version.len() == 18,
        "{version}"
    );
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(headers["x-content-type-options"], "nosniff");
    // Nothing is fetched from elsewhere: every script and style is under /ui/.
    for (path, kind) in [
        ("/ui/app.js", "text/javascript"),
        ("/ui/vendor/preact-htm.js", "text/javascript"),
        ("/ui/style.css", "text/css"),
    ] {
        let (status, headers, body) = browser.send(Method::GET, path, None, None, None);
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(
            headers["content-type"].to_str().unwrap().starts_with(kind),
            "{path}"
        );
        assert!(
            !body.contains("https://"),
            "{path} refers to another origin"
        );
        assert_eq!(headers["cache-control"], "no-cache", "{path}");
        let etag = headers["etag"].to_str().unwrap().to_string();
        let (again, _, _) =
            browser
                .api
                .send_raw(Method::GET, path, &[("if-none-match", &etag)], None);
        assert_eq!(again, StatusCode::NOT_MODIFIED, "{path}");
    }
    // Under the version prefix they are immutable: a new build has a new prefix.
    for path in ["app.js", "pages/execution.js", "style.css"] {
        let (status, headers, body) = browser.send(
            Method::GET,
            &format!("/ui/{version}/{path}"),
            None,
            None,
            None,
        );
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        assert_eq!(
            headers["cache-control"], "public, max-age=31536000, immutable",
            "{path}"
        );
    }
    let (status, _, body) = browser.send(
        Method::GET,
        "/ui/v-0123456789abcdef/app.js",
        None,
        None,
        None,
    );
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("reload the page"), "{body}");
    let (status, _, body) = browser.send(Method::GET, "/ui/nope.js", None, None, None);
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("no UI file nope.js"), "{body}");
    // The API refuses anonymous callers, naming both ways in.
    let (status, _, body) = browser.send(Method::GET, "/api/v1/overview", None, None, None);
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("or sign in"), "{body}");
}

#[test]
fn the_first_start_prints_a_generated_admin_password_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut controller = Controller::start(dir.path(), 0, &[]);
    let password = wait_for("the admin password line", Duration::from_secs(10), || {
        controller.stdout.lock().unwrap().iter().find_map(|line| {
            line.split("password ")
                .nth(1)
                .and_then(|rest| rest.split(';').next())
                .map(str::to_string)
        })
    });
    assert_eq!(password.len(), 20);
    let browser = Browser::new(&controller);
    let (status, _, _, _) = browser.sign_in(&password);
    assert_eq!(status, StatusCode::OK);

    // A restart keeps the account and prints no password.
    let port = controller.port;
    controller.kill();
    drop(controller);
    let controller = Controller::start(dir.path(), port, &[]);
    wait_for("the web UI line", Duration::from_secs(10), || {
        controller
            .stdout
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("web UI:"))
            .then_some(())
    });
    let printed = controller.stdout.lock().unwrap().join("\n");
    assert!(printed.contains("(sign in as admin)"), "{printed}");
    assert!(!printed.contains(&password), "{printed}");
    let browser = Browser::new(&controller);
    assert_eq!(browser.sign_in(&password).0, StatusCode::OK);
}
