//! End-to-end tests of the operations endpoints: `/readyz`, `/metrics` (Prometheus text
//! format, after a real run on a real agent) and the OpenAPI document, every documented
//! operation of which must be answered by its handler, not by the router's 404/405.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use sluice_e2e::*;

/// One sample of the text format: name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the Prometheus text format 0.0.4; checks every sample's family has HELP and
/// TYPE lines before its samples.
fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut helped = std::collections::HashSet::new();
    let mut typed = BTreeMap::new();
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            helped.insert(rest.split(' ').next().unwrap().to_string());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let name = parts.next().unwrap().to_string();
            let kind = parts.next().unwrap().to_string();
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind.as_str()),
                "{line}"
            );
            typed.insert(name, kind);
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment: {line}");
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|e| panic!("bad value in {line:?}: {e}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series.to_string(), BTreeMap::new()),
            Some((name, rest)) => {
                let rest = rest.strip_suffix('}').unwrap();
                let mut labels = BTreeMap::new();
                // Values in these tests hold no `",` sequences.
                for pair in rest.split("\",").filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once("=\"").unwrap();
                    labels.insert(k.to_string(), v.trim_end_matches('"').to_string());
                }
                (name.to_string(), labels)
            }
        };
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|base| typed.get(*base).map(String::as_str) == Some("histogram"))
            })
            .unwrap_or(&name)
            .to_string();
        assert!(typed.contains_key(&family), "no TYPE line for {family}");
        assert!(helped.contains(&family), "no HELP line for {family}");
        samples.push(Sample {
            name,
            labels,
            value,
        });
    }
    samples
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

fn sum(samples: &[Sample], name: &str) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .map(|s| s.value)
        .sum()
}

fn metrics(api: &ApiClient) -> Vec<Sample> {
    let (status, content_type, text) = api.request("GET", "/metrics", true, None);
    assert_eq!(status, 200, "{text}");
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    parse_metrics(&text)
}

#[test]
fn readyz_metrics_and_openapi_after_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let (controller, _agent) = start_with_agent(dir.path(), &["--heartbeat-interval", "500ms"], 1);
    let api = ApiClient::new(&controller);

    // Liveness and readiness need no token.
    let (status, _, body) = api.request("GET", "/healthz", false, None);
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = api.request("GET", "/readyz", false, None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        serde_json::json!({"status": "ready"})
    );

    // Metrics need the API token.
    let (status, _, body) = api.request("GET", "/metrics", false, None);
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["code"],
        "unauthorized"
    );

    // A run on the agent.
    let definition = Pipeline::new("ops")
        .build("Build", "Show", "cat a.txt")
        .write(dir.path());
    controller.create_pipeline(&definition);
    let id = controller.start_pipeline("ops");
    let finished = controller.wait_finished(&id, Duration::from_secs(120));
    assert_eq!(finished["status"], "Succeeded", "{finished:#}");

    // The agent reports its plugin cache totals with its next heartbeat.
    let samples = wait_for(
        "plugin cache totals in /metrics",
        Duration::from_secs(30),
        || {
            let samples = metrics(&api);
            let loads = sum(&samples, "sluice_plugin_cache_hits_total")
                + sum(&samples, "sluice_plugin_cache_misses_total");
            (loads >= 1.0).then_some(samples)
        },
    );
    assert_eq!(
        value(
            &samples,
            "sluice_executions",
            &[("pipeline", "ops"), ("status", "Succeeded")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&samples, "sluice_agents", &[("state", "online")]),
        Some(1.0)
    );
    for state in ["offline", "registered", "revoked"] {
        assert_eq!(
            value(&samples, "sluice_agents", &[("state", state)]),
            Some(0.0),
            "{state}"
        );
    }
    assert_eq!(value(&samples, "sluice_queue_depth", &[]), Some(0.0));
    let build = [
        ("category", "Build"),
        ("provider", "commands"),
        ("status", "Succeeded"),
    ];
    assert!(value(&samples, "sluice_action_duration_seconds_count", &build).unwrap() >= 1.0);
    assert!(sum(&samples, "sluice_action_duration_seconds_count") >= 2.0);
    let mut inf = build.to_vec();
    inf.push(("le", "+Inf"));
    assert_eq!(
        value(&samples, "sluice_action_duration_seconds_bucket", &inf),
        value(&samples, "sluice_action_duration_seconds_count", &build)
    );
    assert!(value(&samples, "sluice_plugin_cache_hits_total", &[]).is_some());
    assert!(value(&samples, "sluice_plugin_cache_misses_total", &[]).is_some());

    // The OpenAPI document: served without a token, the same as the file in the repo.
    let (status, content_type, body) = api.request("GET", "/api/v1/openapi.json", false, None);
    assert_eq!(status, 200, "{body}");
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let served: Value = serde_json::from_str(&body).unwrap();
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("controller")
        .join("openapi.json");
    let in_repo: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    assert_eq!(served, in_repo);
    assert!(served["openapi"].as_str().unwrap().starts_with("3.1"));
    assert_eq!(
        served["components"]["securitySchemes"]["bearerAuth"]["scheme"],
        "bearer"
    );

    // Every documented operation is answered by its handler.
    let paths = served["paths"].as_object().unwrap();
    assert!(paths.len() > 30, "{}", paths.len());
    let mut checked = 0;
    for (path, item) in paths {
        for (method, operation) in item.as_object().unwrap() {
            if !["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                continue;
            }
            let concrete = concrete_path(path, operation);
            let body = match method.as_str() {
                "post" | "put" if path.starts_with("/api/v1/blobs/") => {
                    Some(("application/octet-stream", b"x".to_vec()))
                }
                "post" | "put" => Some(("application/json", b"{}".to_vec())),
                _ => None,
            };
            let (status, _, text) = api.request(&method.to_uppercase(), &concrete, true, body);
            let json: Option<Value> = serde_json::from_str(&text).ok();
            let router_404 = status == 404
                && json
                    .as_ref()
                    .is_none_or(|j| j["message"] == "no such endpoint");
            assert!(
                status != 405 && !router_404,
                "{} {concrete} (documented as {path}) answered {status} from the router: {text}",
                method.to_uppercase()
            );
            if status >= 400 {
                let json = json.unwrap_or_else(|| {
                    panic!("{method} {concrete}: error {status} is not JSON: {text}")
                });
                assert!(json["code"].is_string(), "{method} {concrete}: {json}");
                assert!(json["message"].is_string(), "{method} {concrete}: {json}");
            }
            checked += 1;
        }
    }
    assert!(checked > 35, "{checked}");
}

/// The path with made-up values for its parameters: 0 for integers, a digest of zeros
/// for `sha256`, a name that exists nowhere otherwise.
fn concrete_path(path: &str, operation: &Value) -> String {
    let params = operation["parameters"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    path.split('/')
        .map(|segment| {
            let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) else {
                return segment.to_string();
            };
            let schema = params
                .iter()
                .find(|p| p["name"] == name && p["in"] == "path")
                .map(|p| p["schema"].clone())
                .unwrap_or(Value::Null);
            if schema["type"] == "integer" {
                "0".to_string()
            } else if name == "sha256" {
                "0".repeat(64)
            } else {
                "no-such-thing".to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}
