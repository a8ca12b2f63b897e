//! End-to-end tests of the API behind the web UI's history, agents and plugins pages:
//! the execution list's filters (status, trigger type, start time) and keyset pages
//! (older with `before`, newer with `after`), the agent list with its current work, the
//! join token (used to join a real second agent) and the plugin list, all with an API
//! token against a real controller and agent. Also checks the pages are served.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use sluice_e2e::*;

/// An [`ApiClient`] making the requests these pages make.
struct Api(ApiClient);

impl Api {
    fn new(controller: &Controller) -> Api {
        Api(ApiClient::new(controller))
    }

    /// Sends a request (with the API token if `token`) with an optional JSON body;
    /// returns (status, content type, body).
    fn send(
        &self,
        method: &str,
        path: &str,
        token: bool,
        body: Option<Value>,
    ) -> (u16, String, String) {
        let body = body.map(|b| ("application/json", b.to_string().into_bytes()));
        self.0.request(method, path, token, body)
    }

    /// A GET with the token that must answer 200 with JSON.
    fn get(&self, path: &str) -> Value {
        let (status, _, body) = self.send("GET", path, true, None);
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {body}"))
    }

    /// The ids of `GET /api/v1/executions?{query}`, in the order returned.
    fn ids(&self, query: &str) -> Vec<String> {
        let list = self.get(&format!("/api/v1/executions?{query}"));
        list.as_array()
            .unwrap_or_else(|| panic!("not an array: {list}"))
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_string())
            .collect()
    }
}

/// Starts `name` with `--variable` overrides and waits until it finishes.
fn run_to_end(controller: &Controller, name: &str, variables: &[&str]) -> Value {
    let extra: Vec<&str> = variables.iter().flat_map(|v| ["--variable", v]).collect();
    let id = controller.start_pipeline_with(name, &extra);
    controller.wait_finished(&id, Duration::from_secs(60))
}

#[test]
fn execution_list_filters_and_keyset_pages() {
    let dir = tempfile::tempdir().unwrap();
    let (controller, _agent) = start_with_agent(dir.path(), &[], 2);
    controller.create_pipeline(
        &Pipeline::new("hist")
            .header("variables:\n  - {name: Outcome, defaultValue: ok}\n")
            .build("Build", "Work", "test #{variables.Outcome} = ok")
            .write(dir.path()),
    );
    controller.create_pipeline(&source_and_build(dir.path(), "other", "true"));
    let api = Api::new(&controller);

    // One at a time, so none supersedes another: 7 of `hist` (3 failing), 2 of `other`.
    let outcomes = ["ok", "bad", "ok", "bad", "ok", "ok", "bad"];
    let mut hist = Vec::new();
    for (i, outcome) in outcomes.iter().enumerate() {
        let e = run_to_end(&controller, "hist", &[&format!("Outcome={outcome}")]);
        let expected = if *outcome == "ok" {
            "Succeeded"
        } else {
            "Failed"
        };
        assert_eq!(e["status"], expected, "{e:#}");
        hist.push(e);
        if i % 3 == 0 {
            let o = run_to_end(&controller, "other", &[]);
            assert_eq!(o["status"], "Succeeded", "{o:#}");
        }
    }
    let id = |e: &Value| e["id"].as_str().unwrap().to_string();
    let newest_first = |pred: &dyn Fn(&Value) -> bool| -> Vec<String> {
        hist.iter().rev().filter(|e| pred(e)).map(id).collect()
    };
    let all = newest_first(&|_| true);
    let failed = newest_first(&|e| e["status"] == "Failed");
    let succeeded = newest_first(&|e| e["status"] == "Succeeded");
    assert_eq!(failed.len(), 3);

    // The pipeline's executions, newest first; the response is still a plain array.
    assert_eq!(api.ids("pipeline=hist"), all);
    assert_eq!(api.ids("pipeline=hist&limit=500"), all);
    assert_eq!(api.ids("pipeline=hist&status=Failed"), failed);
    assert_eq!(api.ids("pipeline=hist&status=Succeeded"), succeeded);
    assert_eq!(api.ids("pipeline=other").len(), 3);
    // Without a pipeline: every pipeline's; `other` never failed.
    assert_eq!(api.ids("status=Failed"), failed);
    assert_eq!(api.ids("limit=500").len(), 10);
    // Empty parameters are no filter (what an HTML form sends for "Any").
    assert_eq!(api.ids("pipeline=hist&status=&trigger="), all);

    // Trigger type: everything here was started through the API.
    assert_eq!(api.ids("pipeline=hist&trigger=StartPipelineExecution"), all);
    assert!(api.ids("pipeline=hist&trigger=Webhook").is_empty());
    assert!(
        api.ids("pipeline=hist&status=Failed&trigger=Schedule")
            .is_empty()
    );

    // Start time: from inclusive, to exclusive (hist[2], hist[3] and hist[4]).
    let started = |i: usize| hist[i]["startedAtMs"].as_i64().unwrap();
    assert!(started(2) < started(5));
    let window = format!("pipeline=hist&from={}&to={}", started(2), started(5));
    assert_eq!(
        api.ids(&window),
        vec![id(&hist[4]), id(&hist[3]), id(&hist[2])]
    );
    assert_eq!(
        api.ids(&format!("{window}&status=Failed")),
        vec![id(&hist[3])]
    );
    assert_eq!(
        api.ids(&format!("pipeline=hist&from={}", started(6))),
        vec![id(&hist[6])]
    );
    assert_eq!(
        api.ids(&format!("pipeline=hist&to={}", started(1))),
        vec![id(&hist[0])]
    );

    // Keyset pages of 2 through the succeeded ones: older with `before`...
    let seq_of = |execution_id: &str| -> i64 {
        let list = api.get("/api/v1/executions?pipeline=hist&limit=500");
        list.as_array()
            .unwrap()
            .iter()
            .find(|e| e["id"] == execution_id)
            .unwrap()["seq"]
            .as_i64()
            .unwrap()
    };
    let filter = "pipeline=hist&status=Succeeded&limit=2";
    let mut pages = vec![api.ids(filter)];
    loop {
        let last = pages.last().unwrap().last().unwrap().clone();
        let page = api.ids(&format!("{filter}&before={}", seq_of(&last)));
        if page.is_empty() {
            break;
        }
        pages.push(page);
    }
    assert_eq!(pages.len(), 2, "{pages:?}");
    assert_eq!(pages.concat(), succeeded);
    // ...and newer with `after`: the page just newer than the second is the first.
    let first_of_second = pages[1][0].clone();
    assert_eq!(
        api.ids(&format!("{filter}&after={}", seq_of(&first_of_second))),
        pages[0]
    );
    // After the newest there is nothing; before the oldest neither.
    assert!(
        api.ids(&format!("{filter}&after={}", seq_of(&succeeded[0])))
            .is_empty()
    );
    // The history page asks for one more than it shows, to know whether to offer "Older".
    assert_eq!(
        api.ids(&format!("pipeline=hist&limit=3&before={}", seq_of(&all[2]))),
        all[3..6].to_vec()
    );
    assert_eq!(
        api.ids(&format!("pipeline=hist&limit=3&after={}", seq_of(&all[5]))),
        all[2..5].to_vec(),
        "the newer page holds the executions just after the cursor, newest first"
    );

    // Both cursors at once is a mistake; a malformed number is too.
    let (status, _, body) = api.send(
        "GET",
        "/api/v1/executions?pipeline=hist&before=5&after=2",
        true,
        None,
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["code"],
        "bad_request"
    );
    let (status, _, body) = api.send("GET", "/api/v1/executions?from=yesterday", true, None);
    assert_eq!(status, 400, "{body}");
    // No token, no history.
    let (status, _, _) = api.send("GET", "/api/v1/executions?pipeline=hist", false, None);
    assert_eq!(status, 401);

    // The CLI reads the same list.
    let listed = controller.json(&["execution", "list", "--pipeline", "hist", "--limit", "3"]);
    let listed: Vec<String> = listed.as_array().unwrap().iter().map(id).collect();
    assert_eq!(listed, all[..3].to_vec());
}

#[test]
fn agents_list_their_work_and_join_tokens_join_new_agents() {
    let dir = tempfile::tempdir().unwrap();
    let (controller, _agent) = start_with_agent(dir.path(), &[], 2);
    let api = Api::new(&controller);

    // The agent as the agents page shows it: state, labels, version, capacity, work.
    let agents = wait_for("the agent to be online", Duration::from_secs(30), || {
        let agents = api.get("/api/v1/agents");
        (agents[0]["state"] == "online").then_some(agents)
    });
    let first = &agents[0];
    assert_eq!(agents.as_array().unwrap().len(), 1, "{agents:#}");
    for field in [
        "id",
        "name",
        "labels",
        "capacity",
        "version",
        "state",
        "registeredAtMs",
        "lastHeartbeatMs",
        "running",
    ] {
        assert!(first.get(field).is_some(), "agents lack {field}: {first:#}");
    }
    assert_eq!(first["capacity"], 2);
    assert_eq!(first["running"], 0);
    assert!(first["lastHeartbeatMs"].as_i64().unwrap() > 0);
    assert!(first.get("certFingerprint").is_none(), "{first:#}");

    // Current work: an action running on it counts.
    controller.create_pipeline(&source_and_build(dir.path(), "slow", "sleep 4"));
    let id = controller.start_pipeline("slow");
    wait_for("the agent to hold work", Duration::from_secs(30), || {
        let agents = api.get("/api/v1/agents");
        (agents[0]["running"] == 1).then_some(())
    });
    let done = controller.wait_finished(&id, Duration::from_secs(60));
    assert_eq!(done["status"], "Succeeded", "{done:#}");
    wait_for("the agent to be idle", Duration::from_secs(30), || {
        (api.get("/api/v1/agents")[0]["running"] == 0).then_some(())
    });

    // A join token, as the page's form asks for it (labels and a TTL in seconds).
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let (status, _, body) = api.send(
        "POST",
        "/api/v1/agents/tokens",
        true,
        Some(json!({"labels": {"zone": "b", "gpu": "yes"}, "ttlSeconds": 600})),
    );
    assert_eq!(status, 201, "{body}");
    let token: Value = serde_json::from_str(&body).unwrap();
    let secret = token["token"].as_str().unwrap();
    assert!(secret.starts_with("sjt_"), "{token:#}");
    let fingerprint = token["caFingerprint"].as_str().unwrap();
    assert!(!fingerprint.is_empty());
    let expires = token["expiresAtMs"].as_i64().unwrap();
    assert!(
        (before + 590_000..=before + 660_000).contains(&expires),
        "{expires} vs {before}"
    );
    assert_eq!(token["labels"], json!({"gpu": "yes", "zone": "b"}));

    // The command the page shows, run on "the new machine", joins an agent.
    let state = dir.path().join("agent-b");
    ok(&mut controller.join_command(secret, fingerprint, &state));
    let joined = api.get("/api/v1/agents");
    let second = joined
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] != first["id"])
        .unwrap_or_else(|| panic!("no second agent: {joined:#}"))
        .clone();
    assert_eq!(second["state"], "registered", "{second:#}");
    assert_eq!(second["labels"]["zone"], "b", "{second:#}");
    let _agent_b = run_agent(&state, 1);
    wait_for(
        "the second agent to be online",
        Duration::from_secs(30),
        || {
            let agents = api.get("/api/v1/agents");
            agents
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["id"] == second["id"] && a["state"] == "online")
                .map(|a| {
                    assert_eq!(a["labels"]["gpu"], "yes", "{a:#}");
                    assert_eq!(a["capacity"], 1, "{a:#}");
                })
        },
    );
    // Single use.
    let (_, _, stderr) =
        run(&mut controller.join_command(secret, fingerprint, &dir.path().join("agent-c")));
    assert!(stderr.contains("already used"), "{stderr}");

    // The form's mistakes, and no token.
    let (status, _, body) = api.send(
        "POST",
        "/api/v1/agents/tokens",
        true,
        Some(json!({"labels": {}, "ttlSeconds": 0})),
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["errors"][0]["path"],
        "ttlSeconds"
    );
    let (status, _, _) = api.send(
        "POST",
        "/api/v1/agents/tokens",
        false,
        Some(json!({"ttlSeconds": 60})),
    );
    assert_eq!(status, 401);
    let (status, _, _) = api.send("GET", "/api/v1/agents", false, None);
    assert_eq!(status, 401);
}

#[test]
fn plugins_list_capabilities_and_grants_and_the_pages_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(dir.path(), 0, &[]);
    let api = Api::new(&controller);

    let plugins = api.get("/api/v1/plugins");
    let plugins = plugins.as_array().unwrap();
    assert!(!plugins.is_empty());
    for p in plugins {
        for field in [
            "id",
            "version",
            "provider",
            "categories",
            "capabilities",
            "grants",
            "builtin",
        ] {
            assert!(p.get(field).is_some(), "plugin lacks {field}: {p:#}");
        }
        // Every capability asked for by name is granted, or the plugin would not be installed.
        for (field, kind) in [
            ("programs", "program"),
            ("hosts", "host"),
            ("secrets", "secret"),
            ("env", "env"),
        ] {
            for name in p["capabilities"][field].as_array().unwrap() {
                let name = name.as_str().unwrap();
                if name != "*" {
                    let grant = format!("{kind}:{name}");
                    assert!(
                        p["grants"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .any(|g| g == grant.as_str()),
                        "{grant} not granted: {p:#}"
                    );
                }
            }
        }
    }
    let commands = plugins
        .iter()
        .find(|p| p["provider"] == "commands")
        .unwrap();
    let one = api.get(&format!(
        "/api/v1/plugins/{}",
        commands["id"].as_str().unwrap()
    ));
    assert_eq!(one[0]["provider"], "commands");

    // The pages' scripts are served (the UI loads them as modules).
    for page in ["history", "agents", "plugins"] {
        let (status, content_type, body) =
            api.send("GET", &format!("/ui/pages/{page}.js"), false, None);
        assert_eq!(status, 200, "{page}: {body}");
        assert!(
            content_type.starts_with("text/javascript"),
            "{content_type}"
        );
        assert!(body.contains("data-test"), "{page}");
    }
}

/// Source (a directory) → Work (runs `command`).
fn one_step(dir: &Path, name: &str, command: &str) -> PathBuf {
    Pipeline::new(name).build("Work", "Run", command).write(dir)
}

#[test]
fn agents_can_be_drained_undrained_and_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let (controller, _agent) = start_with_agent(dir.path(), &[], 1);
    controller.create_pipeline(&one_step(dir.path(), "quick", "true"));
    controller.create_pipeline(&one_step(dir.path(), "slow", "sleep 60"));
    let agents = wait_for("the agent to connect", Duration::from_secs(30), || {
        let agents = controller.json(&["agent", "list"]);
        (agents[0]["state"] == "online").then_some(agents)
    });
    let id = agents[0]["id"].as_str().unwrap().to_string();
    assert_eq!(agents[0]["drained"], false);

    // Drained: the agent stays connected, but nothing new is offered to it.
    let drained = controller.json(&["agent", "drain", &id]);
    assert_eq!(drained["drained"], true, "{drained:#}");
    assert_eq!(drained["state"], "online");
    assert!(ok(controller.cli().args(["agent", "list"])).contains("online,drained"));
    let quick = controller.start_pipeline("quick");
    let waiting = wait_for("the source action to wait", Duration::from_secs(20), || {
        let e = controller.execution(&quick);
        let attempt = e["stages"][0]["actions"][0]["attempts"][0].clone();
        attempt["waitingReason"].is_string().then_some(attempt)
    });
    assert_eq!(waiting["phase"], "queued", "{waiting:#}");
    // Undrained, it takes the work.
    assert_eq!(
        controller.json(&["agent", "undrain", &id])["drained"],
        false
    );
    let done = controller.wait_finished(&quick, Duration::from_secs(60));
    assert_eq!(done["status"], "Succeeded", "{done:#}");

    // Revoked while it runs something: it is disconnected, the attempt fails at once,
    // and it stays revoked (its disconnection does not make it merely offline).
    let slow = controller.start_pipeline("slow");
    controller.wait_phase(&slow, 1, "running", Duration::from_secs(30));
    // The agent list says what it runs.
    let work = controller.json(&["agent", "list"])[0]["work"].clone();
    assert_eq!(work[0]["pipelineName"], "slow", "{work:#}");
    assert_eq!(work[0]["executionId"], slow.as_str(), "{work:#}");
    assert_eq!(work[0]["phase"], "running", "{work:#}");
    let revoked = controller.json(&["agent", "revoke", &id]);
    assert_eq!(revoked["state"], "revoked", "{revoked:#}");
    let failed = controller.wait_finished(&slow, Duration::from_secs(30));
    assert_eq!(failed["status"], "Failed", "{failed:#}");
    let error = failed["stages"][1]["actions"][0]["attempts"][0]["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(error.contains("was revoked"), "{error}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(controller.json(&["agent", "list"])[0]["state"], "revoked");
    let (out, _, stderr) = run(controller.cli().args(["agent", "drain", &id]));
    assert!(!out.status.success());
    assert!(stderr.contains("was revoked"), "{stderr}");
}
