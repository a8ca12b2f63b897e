//! End-to-end tests of what the execution page uses beyond the JSON API: artifact
//! downloads (`GET /api/v1/executions/{id}/artifacts/{name}`), the log endpoint's
//! state header, and the embedded scripts of the execution page and log viewer. Real
//! controller and agent processes over real TLS, signed in like a browser.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sluice_e2e::*;

const PASSWORD: &str = "correct horse battery";

/// Signs in as the admin; returns the cookie header value.
fn sign_in(client: &ApiClient) -> String {
    let (status, headers, body) = client.send_json(
        Method::POST,
        "/api/v1/session",
        &[],
        Some(json!({"username": "admin", "password": PASSWORD})),
    );
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let set_cookie = headers.get("set-cookie").unwrap().to_str().unwrap();
    set_cookie.split(';').next().unwrap().to_string()
}

fn header<'a>(headers: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or_default()
}

fn json_of(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

#[test]
fn artifacts_download_as_tars_and_the_execution_page_scripts_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let (controller, _agent) = start_with_agent(dir.path(), &["--admin-password", PASSWORD], 1);
    let source = dir.path().join("src");
    std::fs::create_dir_all(&source).unwrap();
    std::fs::write(source.join("a.txt"), "hello from the artifact\n").unwrap();
    let definition = dir.path().join("ui.yaml");
    std::fs::write(
        &definition,
        format!(
            "name: ui\nstages:\n  - name: Source\n    actions:\n      - {{name: Snap, actionTypeId: {{category: Source, provider: directory}}, configuration: {{Path: {}}}, outputArtifacts: [Code]}}\n  - name: Build\n    actions:\n      - {{name: Make, actionTypeId: {{category: Build, provider: commands}}, configuration: {{Commands: 'printf \"\\\\033[31mred\\\\033[0m line\\\\n\"; cat a.txt'}}, inputArtifacts: [Code]}}\n",
            source.display()
        ),
    )
    .unwrap();
    controller.create_pipeline(&definition);
    let id = controller.start_pipeline("ui");
    let finished = controller.wait_finished(&id, Duration::from_secs(120));
    assert_eq!(finished["status"], "Succeeded", "{finished:#}");

    let client = ApiClient::new(&controller);
    let cookie = sign_in(&client);
    let signed_in = [("cookie", cookie.as_str())];

    // The execution as the page reads it names the artifact.
    let (status, _, body) = client.send_json(
        Method::GET,
        &format!("/api/v1/executions/{id}"),
        &signed_in,
        None,
    );
    assert_eq!(status, StatusCode::OK);
    let detail = json_of(&body);
    let artifact = detail["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "Code")
        .unwrap_or_else(|| panic!("no Code artifact in {detail:#}"))
        .clone();
    let sha256 = artifact["sha256"].as_str().unwrap();

    // The download is the stored tar, byte for byte, as an attachment.
    let path = format!("/api/v1/executions/{id}/artifacts/Code");
    let (status, headers, tar) = client.send_json(Method::GET, &path, &signed_in, None);
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&tar));
    assert_eq!(header(&headers, "content-type"), "application/x-tar");
    assert_eq!(
        header(&headers, "content-disposition"),
        "attachment; filename=\"Code.tar\""
    );
    assert_eq!(header(&headers, "x-artifact-sha256"), sha256);
    assert_eq!(hex::encode(Sha256::digest(&tar)), sha256);
    assert_eq!(tar.len() as u64, artifact["size"].as_u64().unwrap());
    assert!(
        tar.len() > 512 && &tar[257..262] == b"ustar",
        "not a tar archive"
    );
    assert!(
        tar.windows(b"hello from the artifact".len())
            .any(|w| w == b"hello from the artifact"),
        "the archive does not hold the source file"
    );

    // An API token works too; a percent-encoded name is decoded.
    let token = format!("Bearer {}", controller.api_token());
    let (status, _, same) = client.send_json(
        Method::GET,
        &format!("/api/v1/executions/{id}/artifacts/%43ode"),
        &[("authorization", token.as_str())],
        None,
    );
    assert_eq!(status, StatusCode::OK);
    assert_eq!(same, tar);

    // Unknown artifact, unknown execution: JSON 404s. No credentials: 401.
    let (status, headers, body) = client.send_json(
        Method::GET,
        &format!("/api/v1/executions/{id}/artifacts/Nope"),
        &signed_in,
        None,
    );
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(header(&headers, "content-type").starts_with("application/json"));
    let error = json_of(&body);
    assert_eq!(error["code"], "not_found");
    assert!(
        error["message"].as_str().unwrap().contains("Nope"),
        "{error}"
    );
    let (status, _, body) = client.send_json(
        Method::GET,
        "/api/v1/executions/00000000-0000-0000-0000-000000000000/artifacts/Code",
        &signed_in,
        None,
    );
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(json_of(&body)["code"], "not_found");
    let (status, _, body) = client.send_json(Method::GET, &path, &[], None);
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(json_of(&body)["code"], "unauthorized");

    // The log viewer's endpoint: the whole log of a finished attempt, marked complete.
    let attempt = &detail["stages"][1]["actions"][0]["attempts"][0];
    let attempt_id = attempt["id"].as_i64().unwrap();
    let (status, headers, log) = client.send_json(
        Method::GET,
        &format!("/api/v1/executions/{id}/logs/{attempt_id}?offset=0"),
        &signed_in,
        None,
    );
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&headers, "x-log-state"), "complete");
    let log = String::from_utf8_lossy(&log);
    assert!(log.contains("\u{1b}[31mred\u{1b}[0m line"), "{log}");
    assert!(log.contains("hello from the artifact"), "{log}");
    assert_eq!(attempt["log"]["complete"], true);

    // The execution page and the log viewer are served as scripts.
    for (file, marker) in [
        ("/ui/log.js", "data-test=\"log-view\""),
        ("/ui/pages/execution.js", "data-test=\"timeline\""),
    ] {
        let (status, headers, body) = client.send_json(Method::GET, file, &[], None);
        assert_eq!(status, StatusCode::OK, "{file}");
        assert!(
            header(&headers, "content-type").starts_with("text/javascript"),
            "{file}: {:?}",
            headers.get("content-type")
        );
        let text = String::from_utf8(body).unwrap();
        assert!(text.contains(marker), "{file} lacks {marker}");
    }
    // The page imports the viewer by the path it is served under.
    let (_, _, page) = client.send_json(Method::GET, "/ui/pages/execution.js", &[], None);
    assert!(
        String::from_utf8(page)
            .unwrap()
            .contains("from '../log.js'")
    );
}
