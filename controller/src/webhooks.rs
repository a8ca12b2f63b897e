//! Incoming webhooks: git events that start pipelines (CodePipeline V2 triggers).
//!
//! `POST /webhooks/<id>` carries no API token; it is authenticated by the webhook's
//! secret (a named secret in the secret store): GitHub's `X-Hub-Signature-256` and our
//! `X-Sluice-Signature-256` are `sha256=<hex HMAC-SHA256 of the raw body>`, GitLab's
//! `X-Gitlab-Token` is the secret itself. Comparisons are constant-time (ring). A
//! verified event is matched against the pipeline's `triggers` (or, without triggers,
//! a push to a git source action's `BranchName`); a match starts an execution pinning
//! the event's commit for the matched source action. Every delivery is recorded.
//!
//! The generic body: `{"ref": "refs/heads/main", "commit": "<sha>", "changedFiles":
//! ["src/a.rs"], "event": "push"}`; `event` is `push` (the default) or a pull request
//! event `OPEN`, `UPDATED` or `CLOSED`, with `ref` the target branch.

use ring::hmac;
use serde::Deserialize;
use serde_json::{Value, json};
use sluice_pipeline::{Category, GitEvent, GitEventKind, PullRequestEvent};

use crate::engine::{Engine, EngineError, StartOptions};
use crate::store::{StoreError, TriggerWebhookRow, now_ms};

/// The kinds of incoming webhooks.
pub const KINDS: &[&str] = &["github", "gitlab", "generic"];

/// What `create` made.
#[derive(Debug)]
pub struct Created {
    /// The webhook.
    pub webhook: TriggerWebhookRow,
    /// The generated secret value, shown once (`None` if an existing secret was named).
    pub secret: Option<String>,
}

/// Creates a webhook for a pipeline. Without `secret_name`, or when the named secret is
/// not set, a random secret value is generated and stored.
pub fn create(
    engine: &Engine,
    pipeline: &str,
    kind: &str,
    secret_name: Option<&str>,
) -> Result<Created, EngineError> {
    if !KINDS.contains(&kind) {
        return Err(EngineError::Invalid(format!(
            "kind {kind:?} is not known; use one of: {}",
            KINDS.join(", ")
        )));
    }
    engine.store().pipeline_version(pipeline, None)?;
    let id = hex::encode(rand::random::<[u8; 16]>());
    let secret_name = secret_name
        .map(str::to_owned)
        .unwrap_or_else(|| format!("webhook_{}", &id[..12]));
    if !sluice_pipeline::manifest::is_secret_name(&secret_name) {
        return Err(EngineError::Invalid(format!(
            "secret name {secret_name:?} is not valid: use 1 to 128 letters, digits and _, not starting with a digit"
        )));
    }
    let secret = if engine.store().secret(&secret_name)?.is_some() {
        None
    } else {
        let value = hex::encode(rand::random::<[u8; 32]>());
        engine.set_secret(&secret_name, &value)?;
        Some(value)
    };
    let webhook = TriggerWebhookRow {
        id,
        pipeline: pipeline.to_owned(),
        kind: kind.to_owned(),
        secret_name,
        created_at_ms: now_ms(),
    };
    engine.store().insert_trigger_webhook(&webhook)?;
    tracing::info!(webhook = %webhook.id, pipeline, kind, "Webhook created.");
    Ok(Created { webhook, secret })
}

/// The answer to a delivery: HTTP status and JSON body.
pub type Answer = (u16, Value);

/// Handles `POST /webhooks/<id>`.
pub fn receive(engine: &Engine, id: &str, headers: &http::HeaderMap, body: &[u8]) -> Answer {
    let webhook = match engine.store().trigger_webhook(id) {
        Ok(Some(w)) => w,
        Ok(None) => return error(404, "not_found", format!("no webhook {id}")),
        Err(e) => return internal(e),
    };
    let record = |event: &str, result: &str, detail: &str, execution: Option<&str>| {
        if let Err(e) = engine
            .store()
            .insert_delivery(id, event, result, detail, execution)
        {
            tracing::error!(webhook = %id, error = %e, "Cannot record a webhook delivery.");
        }
    };
    if let Err(why) = authenticate(engine, &webhook, headers, body) {
        tracing::warn!(webhook = %id, pipeline = %webhook.pipeline, reason = %why, "Webhook delivery rejected.");
        record(&webhook.kind, "rejected", &why, None);
        return error(401, "unauthorized", why);
    }
    let delivery = match parse(&webhook.kind, headers, body) {
        Ok(Some(d)) => d,
        Ok(None) => {
            let what = header(headers, event_header(&webhook.kind)).unwrap_or("event");
            let detail = format!(
                "{} {what}: not a push or pull request; ignored",
                webhook.kind
            );
            record(&webhook.kind, "ignored", &detail, None);
            return (202, json!({"result": "ignored", "detail": detail}));
        }
        Err(why) => {
            record(&webhook.kind, "rejected", &why, None);
            return error(400, "bad_request", why);
        }
    };
    let short = &delivery.commit[..delivery.commit.len().min(7)];
    let label = format!(
        "{} {} {} {short}",
        webhook.kind, delivery.label, delivery.event.git_ref
    );
    let definition = match engine
        .store()
        .pipeline_version(&webhook.pipeline, None)
        .map_err(|e| e.to_string())
        .and_then(|v| sluice_pipeline::parse(&v.definition, None).map_err(|e| e.to_string()))
    {
        Ok(parsed) => parsed.pipeline,
        Err(e) => {
            record(&label, "rejected", &e, None);
            return error(404, "not_found", e);
        }
    };
    let action = match definition.trigger_for(&delivery.event) {
        Ok(action) => action,
        Err(why) => {
            record(&label, "no_match", &why, None);
            return (202, json!({"result": "no_match", "detail": why}));
        }
    };
    let mut options = StartOptions::default();
    let is_git = definition.stages.first().is_some_and(|s| {
        s.actions.iter().any(|a| {
            a.name == action
                && a.action_type_id.category == Category::Source
                && a.action_type_id.provider == "git"
        })
    });
    if is_git {
        options
            .source_revisions
            .insert(action.clone(), delivery.commit.clone());
    }
    let detail = format!("{label} (webhook {id})");
    match engine.start_execution_with(&webhook.pipeline, "Webhook", &detail, &options) {
        Ok((execution, _)) => {
            record(&label, "started", &detail, Some(&execution.id));
            tracing::info!(webhook = %id, execution = %execution.id, "Webhook started an execution.");
            (
                201,
                json!({"result": "started", "executionId": execution.id, "sourceAction": action}),
            )
        }
        Err(e) => {
            let message = e.to_string();
            record(&label, "rejected", &message, None);
            match e {
                EngineError::Invalid(_) => error(400, "bad_request", message),
                EngineError::Store(StoreError::NotFound(_)) => error(404, "not_found", message),
                _ => internal(message),
            }
        }
    }
}

fn error(status: u16, code: &str, message: impl Into<String>) -> Answer {
    (status, json!({"code": code, "message": message.into()}))
}

fn internal(e: impl std::fmt::Display) -> Answer {
    tracing::error!(error = %e, "Webhook delivery failed.");
    error(500, "internal", format!("internal error: {e}"))
}

fn header<'h>(headers: &'h http::HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn event_header(kind: &str) -> &'static str {
    match kind {
        "github" => "x-github-event",
        "gitlab" => "x-gitlab-event",
        _ => "x-sluice-event",
    }
}

/// Checks the signature or token against the webhook's secret.
fn authenticate(
    engine: &Engine,
    webhook: &TriggerWebhookRow,
    headers: &http::HeaderMap,
    body: &[u8],
) -> Result<(), String> {
    let secret = match engine.secret_value(&webhook.secret_name) {
        Ok(Some(secret)) => secret,
        Ok(None) => return Err(format!("secret {} is not set", webhook.secret_name)),
        Err(e) => return Err(format!("secret {}: {e}", webhook.secret_name)),
    };
    match webhook.kind.as_str() {
        "gitlab" => {
            let token = header(headers, "x-gitlab-token").ok_or("missing X-Gitlab-Token")?;
            if equal(token.as_bytes(), secret.as_bytes()) {
                Ok(())
            } else {
                Err("X-Gitlab-Token does not match".into())
            }
        }
        kind => {
            let name = if kind == "github" {
                "x-hub-signature-256"
            } else {
                "x-sluice-signature-256"
            };
            let given = header(headers, name).ok_or_else(|| format!("missing {name}"))?;
            let tag = given
                .strip_prefix("sha256=")
                .and_then(|h| hex::decode(h).ok())
                .ok_or_else(|| format!("{name} is not sha256=<hex>"))?;
            let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
            hmac::verify(&key, body, &tag).map_err(|_| format!("{name} does not match the body"))
        }
    }
}

/// Constant-time equality (HMACs of both under one key; `verify` compares in constant time).
fn equal(a: &[u8], b: &[u8]) -> bool {
    let key = hmac::Key::new(hmac::HMAC_SHA256, b"sluice webhook token comparison");
    hmac::verify(&key, a, hmac::sign(&key, b).as_ref()).is_ok()
}

/// A verified delivery, understood.
struct Delivery {
    /// `push` or `pull_request OPEN`.
    label: String,
    event: GitEvent,
    commit: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Commit {
    added: Vec<String>,
    modified: Vec<String>,
    removed: Vec<String>,
}

fn changed_files(commits: &Value) -> Option<Vec<String>> {
    let commits: Vec<Commit> = serde_json::from_value(commits.clone()).ok()?;
    if commits.is_empty() {
        return None;
    }
    let mut files: Vec<String> = commits
        .into_iter()
        .flat_map(|c| c.added.into_iter().chain(c.modified).chain(c.removed))
        .collect();
    files.sort();
    files.dedup();
    Some(files)
}

fn text(v: &Value, pointer: &str) -> Result<String, String> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| format!("the payload has no {pointer}"))
}

fn push(git_ref: String, commit: String, files: Option<Vec<String>>) -> Option<Delivery> {
    // A deleted branch or tag has an all-zero commit: nothing to build.
    if commit.chars().all(|c| c == '0') {
        return None;
    }
    Some(Delivery {
        label: "push".into(),
        event: GitEvent {
            kind: GitEventKind::Push,
            git_ref,
            changed_files: files,
        },
        commit,
    })
}

fn pull_request(event: PullRequestEvent, target: String, commit: String) -> Option<Delivery> {
    Some(Delivery {
        label: format!("pull_request {}", event.as_str()),
        event: GitEvent {
            kind: GitEventKind::PullRequest(event),
            git_ref: target,
            changed_files: None,
        },
        commit,
    })
}

/// Reads the payload; `Ok(None)` for events that never start runs (pings, other events).
fn parse(kind: &str, headers: &http::HeaderMap, body: &[u8]) -> Result<Option<Delivery>, String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let event = header(headers, event_header(kind)).unwrap_or("");
    match (kind, event) {
        ("github", "push") => Ok(push(
            text(&v, "/ref")?,
            text(&v, "/after")?,
            changed_files(&v["commits"]),
        )),
        ("github", "pull_request") => {
            let action = match v["action"].as_str() {
                Some("opened" | "reopened") => PullRequestEvent::Open,
                Some("synchronize") => PullRequestEvent::Updated,
                Some("closed") => PullRequestEvent::Closed,
                _ => return Ok(None),
            };
            Ok(pull_request(
                action,
                text(&v, "/pull_request/base/ref")?,
                text(&v, "/pull_request/head/sha")?,
            ))
        }
        ("gitlab", "Push Hook" | "Tag Push Hook") => Ok(push(
            text(&v, "/ref")?,
            text(&v, "/after")?,
            changed_files(&v["commits"]),
        )),
        ("gitlab", "Merge Request Hook") => {
            let action = match v
                .pointer("/object_attributes/action")
                .and_then(Value::as_str)
            {
                Some("open" | "reopen") => PullRequestEvent::Open,
                Some("update") => PullRequestEvent::Updated,
                Some("close" | "merge") => PullRequestEvent::Closed,
                _ => return Ok(None),
            };
            Ok(pull_request(
                action,
                text(&v, "/object_attributes/target_branch")?,
                text(&v, "/object_attributes/last_commit/id")?,
            ))
        }
        ("generic", _) => {
            let git_ref = text(&v, "/ref")?;
            let commit = text(&v, "/commit")?;
            let files = match &v["changedFiles"] {
                Value::Null => None,
                files => Some(
                    serde_json::from_value::<Vec<String>>(files.clone())
                        .map_err(|_| "changedFiles must be a list of paths".to_owned())?,
                ),
            };
            match v["event"].as_str().unwrap_or("push") {
                "push" => Ok(push(git_ref, commit, files)),
                other => {
                    let event = PullRequestEvent::ALL
                        .into_iter()
                        .find(|e| e.as_str() == other)
                        .ok_or_else(|| {
                            format!("event {other:?} is not push, OPEN, UPDATED or CLOSED")
                        })?;
                    let mut d = pull_request(event, git_ref, commit);
                    if let Some(d) = &mut d {
                        d.event.changed_files = files;
                    }
                    Ok(d)
                }
            }
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(equal(b"abc", b"abc"));
        assert!(!equal(b"abc", b"abd"));
        assert!(!equal(b"abc", b"abcd"));
    }

    #[test]
    fn github_payloads() {
        let mut headers = http::HeaderMap::new();
        headers.insert("x-github-event", "push".parse().unwrap());
        let body = br#"{"ref":"refs/heads/main","after":"abc123","commits":[{"added":["a"],"modified":["b"],"removed":[]},{"added":[],"modified":["a"],"removed":["c"]}]}"#;
        let d = parse("github", &headers, body).unwrap().unwrap();
        assert_eq!(
            d.event.changed_files,
            Some(vec!["a".into(), "b".into(), "c".into()])
        );
        assert_eq!(d.commit, "abc123");
        headers.insert("x-github-event", "ping".parse().unwrap());
        assert!(parse("github", &headers, b"{}").unwrap().is_none());
    }
}
