//! End-to-end tests of incoming webhooks (git triggers): GitHub-, GitLab- and
//! generic-shaped deliveries POSTed over HTTPS to a real controller, matched against the
//! pipeline's `triggers` (or its source branch), starting executions that check out the
//! pushed commit on a real agent; bad signatures and non-matching events start nothing
//! and are recorded as deliveries.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use ring::hmac;
use serde_json::{Value, json};
use sluice_e2e::*;

/// POSTs a body with headers; returns (status, JSON answer).
fn post(
    controller: &Controller,
    path: &str,
    headers: &[(&str, String)],
    body: &Value,
) -> (u16, Value) {
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let (status, _, answer) = ApiClient::new(controller).send_raw(
        reqwest::Method::POST,
        path,
        &headers,
        Some(serde_json::to_vec(body).unwrap()),
    );
    (
        status.as_u16(),
        serde_json::from_slice(&answer).unwrap_or(Value::Null),
    )
}

fn sign(secret: &str, body: &Value) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let tag = hmac::sign(&key, &serde_json::to_vec(body).unwrap());
    format!("sha256={}", hex::encode(tag.as_ref()))
}

/// (id, URL path, secret) of a new webhook.
fn create_webhook(controller: &Controller, pipeline: &str, kind: &str) -> (String, String, String) {
    let created = controller.json(&["webhook", "create", pipeline, "--kind", kind]);
    let id = created["webhook"]["id"].as_str().unwrap().to_string();
    let url = created["url"].as_str().unwrap();
    assert!(url.starts_with(&controller.url), "{url}");
    assert!(url.ends_with(&format!("/webhooks/{id}")), "{url}");
    let secret = created["secret"].as_str().unwrap().to_string();
    (id.clone(), format!("/webhooks/{id}"), secret)
}

fn executions(controller: &Controller) -> i64 {
    controller
        .db()
        .query_row("SELECT COUNT(*) FROM executions", [], |r| r.get(0))
        .unwrap()
}

fn deliveries(controller: &Controller, id: &str) -> Vec<Value> {
    controller
        .json(&["webhook", "deliveries", id])
        .as_array()
        .unwrap()
        .clone()
}

fn log_of(controller: &Controller, execution: &str) -> String {
    controller.logs(execution, "Build/Show")
}

fn pipeline_file(dir: &Path, name: &str, repo: &Path, triggers: &str) -> std::path::PathBuf {
    Pipeline::new(name)
        .header(triggers)
        .git_source(repo)
        .build(
            "Build",
            "Show",
            "echo commit=#{Src.CommitId} file=$(cat v.txt)",
        )
        .write(dir)
}

#[test]
fn webhooks_start_pipelines_for_matching_signed_git_events() {
    let dir = tempfile::tempdir().unwrap();
    let (controller, _agent) = start_with_agent(dir.path(), &[], 2);
    let (repo, first, second) = two_commit_repo(&dir.path().join("repo"));

    let triggers = "triggers:
  - providerType: CodeStarSourceConnection
    gitConfiguration:
      sourceActionName: Checkout
      push:
        - branches: {includes: [main, 'release/**'], excludes: [release/old]}
          filePaths: {excludes: ['docs/**']}
      pullRequest:
        - events: [OPEN]
          branches: {includes: [main]}
";
    controller.create_pipeline(&pipeline_file(dir.path(), "hooked", &repo, triggers));
    controller.create_pipeline(&pipeline_file(dir.path(), "plain", &repo, ""));

    // GitHub: a signed push to main of the first commit runs exactly that commit.
    let (github, path, secret) = create_webhook(&controller, "hooked", "github");
    let push = |git_ref: &str, after: &str, files: &[&str]| {
        json!({
            "ref": git_ref, "after": after, "head_commit": {"id": after},
            "commits": [{"id": after, "added": [], "removed": [], "modified": files}],
        })
    };
    let body = push("refs/heads/main", &first, &["v.txt"]);
    let headers = |event: &str, signature: String| {
        vec![
            ("x-github-event", event.to_string()),
            ("x-hub-signature-256", signature),
            ("content-type", "application/json".to_string()),
        ]
    };
    let (status, answer) = post(
        &controller,
        &path,
        &headers("push", sign(&secret, &body)),
        &body,
    );
    assert_eq!(status, 201, "{answer}");
    let execution = answer["executionId"].as_str().unwrap().to_string();
    let done = controller.wait_finished(&execution, Duration::from_secs(60));
    assert_eq!(done["status"], "Succeeded", "{done:#}");
    assert_eq!(done["triggerType"], "Webhook", "{done:#}");
    let detail = done["triggerDetail"].as_str().unwrap();
    assert_eq!(
        detail,
        format!(
            "github push refs/heads/main {} (webhook {github})",
            &first[..7]
        )
    );
    let log = log_of(&controller, &execution);
    assert!(log.contains(&format!("commit={first}")), "{log}");
    assert!(log.contains("file=one"), "{log}");

    // A bad or missing signature: 401, nothing started, recorded as rejected.
    let before = executions(&controller);
    let (status, _) = post(
        &controller,
        &path,
        &headers("push", sign("wrong", &body)),
        &body,
    );
    assert_eq!(status, 401);
    let (status, _) = post(
        &controller,
        &path,
        &[("x-github-event", "push".to_string())],
        &body,
    );
    assert_eq!(status, 401);
    // Signed for another body.
    let other = push("refs/heads/main", &second, &["v.txt"]);
    let (status, _) = post(
        &controller,
        &path,
        &headers("push", sign(&secret, &body)),
        &other,
    );
    assert_eq!(status, 401);

    // An excluded branch, and a push that only changed docs: 202, recorded, no run.
    for (git_ref, files) in [
        ("refs/heads/release/old", vec!["v.txt"]),
        ("refs/heads/feature/x", vec!["v.txt"]),
        ("refs/heads/main", vec!["docs/a.md", "docs/guide/b.md"]),
    ] {
        let body = push(git_ref, &second, &files);
        let (status, answer) = post(
            &controller,
            &path,
            &headers("push", sign(&secret, &body)),
            &body,
        );
        assert_eq!(status, 202, "{git_ref}: {answer}");
        assert_eq!(answer["result"], "no_match", "{answer}");
    }
    assert_eq!(executions(&controller), before, "nothing started");
    let recorded = deliveries(&controller, &github);
    let results: Vec<&str> = recorded
        .iter()
        .map(|d| d["result"].as_str().unwrap())
        .collect();
    assert_eq!(
        results,
        [
            "no_match", "no_match", "no_match", "rejected", "rejected", "rejected", "started"
        ],
        "{recorded:#?}"
    );
    assert_eq!(recorded[6]["executionId"], execution.as_str());
    assert!(
        recorded[0]["detail"]
            .as_str()
            .unwrap()
            .contains("no trigger filter matches push refs/heads/main"),
        "{recorded:#?}"
    );

    // A release branch with a source change matches the second include.
    let body = push("refs/heads/release/2", &second, &["docs/a.md", "v.txt"]);
    let (status, answer) = post(
        &controller,
        &path,
        &headers("push", sign(&secret, &body)),
        &body,
    );
    assert_eq!(status, 201, "{answer}");

    // A pull request opened into main runs its head commit; a closed one does not.
    let pr = |action: &str| {
        json!({
            "action": action, "number": 7,
            "pull_request": {"head": {"ref": "feature/x", "sha": second}, "base": {"ref": "main"}},
        })
    };
    let body = pr("opened");
    let (status, answer) = post(
        &controller,
        &path,
        &headers("pull_request", sign(&secret, &body)),
        &body,
    );
    assert_eq!(status, 201, "{answer}");
    let opened = answer["executionId"].as_str().unwrap().to_string();
    let done = controller.wait_finished(&opened, Duration::from_secs(60));
    assert_eq!(done["status"], "Succeeded", "{done:#}");
    assert!(log_of(&controller, &opened).contains(&format!("commit={second}")));
    let body = pr("closed");
    let (status, answer) = post(
        &controller,
        &path,
        &headers("pull_request", sign(&secret, &body)),
        &body,
    );
    assert_eq!(
        (status, answer["result"].as_str()),
        (202, Some("no_match")),
        "{answer}"
    );

    // GitLab, on a pipeline without triggers: a push to the source branch runs it.
    let (gitlab, path, token) = create_webhook(&controller, "plain", "gitlab");
    let body = json!({"object_kind": "push", "ref": "refs/heads/main", "after": first,
                      "commits": [{"id": first, "modified": ["v.txt"]}]});
    let gl = |token: &str| {
        vec![
            ("x-gitlab-event", "Push Hook".to_string()),
            ("x-gitlab-token", token.to_string()),
        ]
    };
    let (status, _) = post(&controller, &path, &gl("not-the-token"), &body);
    assert_eq!(status, 401);
    let (status, answer) = post(&controller, &path, &gl(&token), &body);
    assert_eq!(status, 201, "{answer}");
    let run = answer["executionId"].as_str().unwrap().to_string();
    let done = controller.wait_finished(&run, Duration::from_secs(60));
    assert_eq!(done["status"], "Succeeded", "{done:#}");
    assert!(log_of(&controller, &run).contains("file=one"));
    // Another branch does not match the source's BranchName (default main).
    let body = json!({"ref": "refs/heads/dev", "after": first, "commits": []});
    let (status, answer) = post(&controller, &path, &gl(&token), &body);
    assert_eq!(
        (status, answer["result"].as_str()),
        (202, Some("no_match")),
        "{answer}"
    );
    assert_eq!(deliveries(&controller, &gitlab).len(), 3);

    // Generic: our own signed body.
    let (_, path, secret) = create_webhook(&controller, "hooked", "generic");
    let body = json!({"ref": "refs/heads/main", "commit": second, "changedFiles": ["src/x.rs"], "event": "push"});
    let (status, _) = post(
        &controller,
        &path,
        &[("x-sluice-signature-256", sign("nope", &body))],
        &body,
    );
    assert_eq!(status, 401);
    let (status, answer) = post(
        &controller,
        &path,
        &[("x-sluice-signature-256", sign(&secret, &body))],
        &body,
    );
    assert_eq!(status, 201, "{answer}");
    let run = answer["executionId"].as_str().unwrap().to_string();
    let done = controller.wait_finished(&run, Duration::from_secs(60));
    assert_eq!(done["status"], "Succeeded", "{done:#}");
    assert!(log_of(&controller, &run).contains("file=two"));

    // Listing and removing; a removed webhook is gone.
    let list = controller.json(&["webhook", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 3);
    ok(controller.cli().args(["webhook", "rm", &gitlab]));
    let (status, _) = post(
        &controller,
        &format!("/webhooks/{gitlab}"),
        &gl(&token),
        &body,
    );
    assert_eq!(status, 404);
}
