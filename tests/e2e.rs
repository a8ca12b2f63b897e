//! End-to-end tests: a real controller and real agents as separate processes on
//! 127.0.0.1, talking mutually authenticated TLS, running the real WASM plugins.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use sluice_e2e::*;

fn pipeline_yaml(repo: &std::path::Path, deploy: &std::path::Path) -> String {
    format!(
        r##"
name: e2e
stages:
  - name: Source
    actions:
      - name: Checkout
        actionTypeId: {{category: Source, owner: Sluice, provider: git, version: "1"}}
        namespace: Src
        configuration:
          RepositoryPath: {repo}
          BranchName: main
        outputArtifacts: [Code]
  - name: Test
    actions:
      - name: TestA
        actionTypeId: {{category: Test, owner: Sluice, provider: commands, version: "1"}}
        configuration:
          Commands: |
            sleep 1
            sh check.sh A "#{{Src.CommitId}}" | tee result-a.txt
          OutputPaths: result-a.txt
        inputArtifacts: [Code]
        outputArtifacts: [ResultA]
      - name: TestB
        actionTypeId: {{category: Test, owner: Sluice, provider: commands, version: "1"}}
        configuration:
          Commands: |
            sleep 1
            sh check.sh B "#{{Src.CommitId}}" | tee result-b.txt
          OutputPaths: result-b.txt
        inputArtifacts: [Code]
        outputArtifacts: [ResultB]
  - name: Deploy
    actions:
      - name: Publish
        actionTypeId: {{category: Deploy, owner: Sluice, provider: directory, version: "1"}}
        configuration:
          TargetDirectory: {deploy}
        inputArtifacts: [Code]
"##,
        repo = repo.display(),
        deploy = deploy.display()
    )
}

const CHECK_SH: &str = "test -f app.txt && echo \"suite $1 passed at $2\"\n";

#[test]
fn three_stage_pipeline_runs_on_two_agents() {
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(dir.path(), 0, &[]);
    let agent_a = dir.path().join("agent-a");
    let agent_b = dir.path().join("agent-b");
    controller.join_agent(&agent_a, "pool=e2e");
    controller.join_agent(&agent_b, "pool=e2e");
    let _a = run_agent(&agent_a, 1);
    // An agent may add labels, but not change the ones its join token granted.
    let _b = run_agent_with_labels(&agent_b, 1, "pool=other,disk=ssd");

    let repo = git_repo(
        &dir.path().join("repo"),
        &[
            ("app.txt", "version 1\n"),
            ("check.sh", CHECK_SH),
            ("bin/tool", "#!/bin/sh\n"),
        ],
    );
    let deploy = dir.path().join("deployed");
    let definition = dir.path().join("pipeline.yaml");
    std::fs::write(&definition, pipeline_yaml(&repo, &deploy)).unwrap();
    controller.create_pipeline(&definition);

    let id = controller.start_pipeline("e2e");
    let execution = controller.wait_finished(&id, Duration::from_secs(120));
    assert_eq!(execution["status"], "Succeeded", "{execution:#}");

    // The deployed tree is the repository's head, without .git.
    assert_eq!(
        std::fs::read_to_string(deploy.join("app.txt")).unwrap(),
        "version 1\n"
    );
    assert!(deploy.join("bin/tool").exists());
    assert!(!deploy.join(".git").exists());

    // Every artifact in history is a blob whose content hashes to its recorded digest.
    let artifacts = execution["artifacts"].as_array().unwrap();
    let names: Vec<&str> = artifacts
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    for expected in ["Code", "ResultA", "ResultB"] {
        assert!(
            names.contains(&expected),
            "artifact {expected} missing from {names:?}"
        );
    }
    for artifact in artifacts {
        let digest = artifact["sha256"].as_str().unwrap();
        let blob = controller.data_dir.join("blobs").join(digest);
        assert_eq!(sha256_file(&blob), digest);
        assert_eq!(
            std::fs::metadata(&blob).unwrap().len(),
            artifact["size"].as_u64().unwrap()
        );
    }

    // History rows: the execution, its three stages and four actions, all succeeded,
    // and the two tests ran at the same time on different agents.
    let db = controller.db();
    let status: String = db
        .query_row("SELECT status FROM executions WHERE id = ?1", [&id], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(status, "Succeeded");
    let stages: Vec<(String, String)> = db
        .prepare("SELECT stage_name, status FROM stage_executions WHERE execution_id = ?1 ORDER BY stage_index")
        .unwrap()
        .query_map([&id], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        stages,
        [
            ("Source", "Succeeded"),
            ("Test", "Succeeded"),
            ("Deploy", "Succeeded")
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    let attempts: Vec<(String, String, String, i64, i64)> = db
        .prepare(
            "SELECT action_name, status, agent_id, started_at_ms, finished_at_ms FROM action_attempts
             WHERE execution_id = ?1 ORDER BY stage_index, action_name",
        )
        .unwrap()
        .query_map([&id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(attempts.len(), 4, "{attempts:?}");
    assert!(attempts.iter().all(|a| a.1 == "Succeeded"), "{attempts:?}");
    let test_a = attempts.iter().find(|a| a.0 == "TestA").unwrap();
    let test_b = attempts.iter().find(|a| a.0 == "TestB").unwrap();
    assert_ne!(
        test_a.2, test_b.2,
        "the parallel tests should run on different agents"
    );
    assert!(
        test_a.3 < test_b.4 && test_b.3 < test_a.4,
        "the tests should overlap in time: {attempts:?}"
    );
    // The source's output variable was resolved into the test's configuration.
    let commit = execution["stages"][0]["actions"][0]["attempts"][0]["outputVariables"]["CommitId"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(commit.len(), 40);
    let logs = controller.logs(&id, "Test/TestA");
    // The command saw the source's CommitId, resolved from #{Src.CommitId}.
    assert!(
        logs.contains(&format!("suite A passed at {commit}")),
        "{logs}"
    );
    let log_rows: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM logs l JOIN action_attempts a ON a.id = l.attempt_id
             WHERE a.execution_id = ?1 AND l.complete = 1",
            [&id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(log_rows, 4, "every action's log should be complete");

    let agents = controller.json(&["agent", "list"]);
    assert_eq!(agents.as_array().unwrap().len(), 2);
    assert!(
        agents
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["state"] == "online" && a["labels"]["pool"] == "e2e")
    );
    assert!(
        agents
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["labels"]["disk"] == "ssd"),
        "{agents:#}"
    );
}

#[test]
fn agents_with_a_foreign_ca_no_certificate_or_a_used_token_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(&dir.path().join("one"), 0, &[]);
    let other = Controller::start(&dir.path().join("two"), 0, &[]);

    // A token works once.
    let (token, fingerprint) = controller.join_token("", "10m");
    let join = |state: &str| {
        run(&mut controller.join_command(&token, &fingerprint, &dir.path().join(state)))
    };
    assert!(join("first").0.status.success());
    let (output, _, stderr) = join("second");
    assert!(!output.status.success());
    assert!(stderr.contains("already used"), "{stderr}");

    // An expired token is refused.
    let (expired, _) = controller.join_token("", "1s");
    std::thread::sleep(Duration::from_millis(1500));
    let (output, _, stderr) =
        run(&mut controller.join_command(&expired, &fingerprint, &dir.path().join("third")));
    assert!(!output.status.success());
    assert!(stderr.contains("expired"), "{stderr}");

    // A pinned fingerprint that does not match is refused before anything is sent.
    let (token2, _) = controller.join_token("", "10m");
    let (output, _, stderr) =
        run(&mut controller.join_command(&token2, &"0".repeat(64), &dir.path().join("fourth")));
    assert!(!output.status.success());
    assert!(stderr.contains("fingerprint"), "{stderr}");

    // An agent whose certificate was issued by another controller's CA is refused at
    // the TLS handshake, and says so.
    let foreign = dir.path().join("foreign");
    other.join_agent(&foreign, "");
    std::fs::copy(controller.ca_file(), foreign.join("ca.crt")).unwrap();
    let identity = std::fs::read_to_string(foreign.join("agent.json")).unwrap();
    std::fs::write(
        foreign.join("agent.json"),
        identity.replace(&other.url, &controller.url),
    )
    .unwrap();
    let mut agent = run_agent(&foreign, 1);
    let (status, stderr) = agent.wait_exit(Duration::from_secs(60));
    assert!(!status.success());
    assert!(
        stderr.contains("refused this agent's certificate"),
        "{stderr}"
    );

    // A client with no certificate gets a clear 401 from the agent endpoint.
    let (output, stdout, _) = run(std::process::Command::new("curl")
        .args(["-s", "--http1.1", "-w", "\n%{http_code}", "--cacert"])
        .arg(controller.ca_file())
        .args([
            "-H",
            "Connection: Upgrade",
            "-H",
            "Upgrade: websocket",
            "-H",
            "Sec-WebSocket-Version: 13",
            "-H",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            &format!("{}/api/v1/agents/connect", controller.url),
        ]));
    assert!(output.status.success(), "curl failed: {stdout}");
    assert!(stdout.trim_end().ends_with("401"), "{stdout}");
    assert!(stdout.contains("needs the client certificate"), "{stdout}");
}

#[test]
fn an_invalid_definition_reports_every_problem_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        r#"
name: "bad name!"
stages:
  - name: Source
    actions:
      - name: Checkout
        actionTypeId: {category: Source, provider: git}
        configuration: {RepositoryPath: /tmp/x}
        outputArtifacts: [Code]
  - name: Build
    actions:
      - name: Compile
        actionTypeId: {category: Build, provider: commands}
        runOrder: 1000
        confguration: {Commands: make}
        inputArtifacts: [BuildOut]
      - name: Compile
        actionTypeId: {category: Build, owner: AWS, provider: CodeBuild}
        inputArtifacts: [Code]
"#,
    )
    .unwrap();
    let config = dir.path().join("client.toml");
    let (output, _, stderr) = run(sluice(&config).args(["pipeline", "validate"]).arg(&bad));
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    for expected in [
        "name:",
        "stages[1].actions[0].confguration: unknown field",
        "stages[1].actions[0].runOrder",
        "stages[1].actions[0].inputArtifacts[0]: \"BuildOut\" is not produced by an earlier action",
        "stages[1].actions[1].name",
        "stages[1].actions[1].actionTypeId: unknown provider",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }

    // The controller returns the same list through the API.
    let controller = Controller::start(&dir.path().join("c"), 0, &[]);
    let (output, _, api_stderr) = run(controller.cli().args(["pipeline", "create"]).arg(&bad));
    assert_eq!(output.status.code(), Some(3), "{api_stderr}");
    assert!(
        api_stderr.contains("stages[1].actions[0].inputArtifacts[0]: \"BuildOut\" is not produced by an earlier action"),
        "{api_stderr}"
    );
    assert!(
        api_stderr.contains("stages[1].actions[0].confguration"),
        "{api_stderr}"
    );
}

/// Makes a one-file git repository and creates the `simple` pipeline over it.
fn create_simple_pipeline(controller: &Controller, dir: &std::path::Path, commands: &str) {
    let repo = git_repo(&dir.join("repo"), &[("a.txt", "a\n")]);
    let definition = dir.join("p.yaml");
    std::fs::write(&definition, simple_pipeline(&repo, commands)).unwrap();
    controller.create_pipeline(&definition);
}

fn simple_pipeline(repo: &std::path::Path, commands: &str) -> String {
    format!(
        r#"
name: simple
stages:
  - name: Source
    actions:
      - name: Checkout
        actionTypeId: {{category: Source, provider: git}}
        configuration: {{RepositoryPath: {repo}}}
        outputArtifacts: [Code]
  - name: Build
    actions:
      - name: Run
        actionTypeId: {{category: Build, provider: commands}}
        configuration:
          Commands: "{commands}"
        inputArtifacts: [Code]
"#,
        repo = repo.display()
    )
}

#[test]
fn a_controller_restarted_between_two_executions_keeps_both() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (mut controller, _agent) =
        start_with_agent_on(dir.path(), port, &["--heartbeat-interval", "500ms"], 1);
    create_simple_pipeline(&controller, dir.path(), "cat a.txt");
    let first = controller.start_pipeline("simple");
    assert_eq!(
        controller.wait_finished(&first, Duration::from_secs(60))["status"],
        "Succeeded"
    );

    controller.kill();
    let controller = Controller::start(dir.path(), port, &["--heartbeat-interval", "500ms"]);
    // The agent reconnects by itself.
    let second = controller.start_pipeline("simple");
    assert_eq!(
        controller.wait_finished(&second, Duration::from_secs(60))["status"],
        "Succeeded"
    );

    let list = controller.json(&["execution", "list", "--pipeline", "simple"]);
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [second.as_str(), first.as_str()]);
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|e| e["status"] == "Succeeded")
    );
    // The first execution's details survived the restart.
    let again = controller.execution(&first);
    assert_eq!(again["stages"][1]["actions"][0]["status"], "Succeeded");
}

#[test]
fn an_agent_killed_mid_action_makes_the_action_fail_as_lost() {
    let dir = tempfile::tempdir().unwrap();
    let (controller, mut agent) = start_with_agent(
        dir.path(),
        &["--lease-ttl", "3s", "--heartbeat-interval", "500ms"],
        1,
    );
    create_simple_pipeline(&controller, dir.path(), "echo started; sleep 60");
    let id = controller.start_pipeline("simple");

    controller.wait_phase(&id, 1, "running", Duration::from_secs(60));
    agent.kill();
    let execution = controller.wait_finished(&id, Duration::from_secs(30));
    assert_eq!(execution["status"], "Failed");
    let error = execution["stages"][1]["actions"][0]["attempts"][0]["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(error.contains("agent lost"), "{error}");
    assert_eq!(execution["stages"][1]["status"], "Failed");
    assert!(
        execution["statusSummary"]
            .as_str()
            .unwrap()
            .contains("agent lost")
    );
}

#[test]
fn an_action_no_agent_can_run_says_why_it_waits_and_runs_once_one_joins() {
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(dir.path(), 0, &[]);
    // A linux agent is registered and connected, but the build wants os=windows.
    let linux = dir.path().join("linux");
    controller.join_agent(&linux, "os=linux");
    let _linux = run_agent(&linux, 1);
    let repo = git_repo(&dir.path().join("repo"), &[("a.txt", "a\n")]);
    let definition = dir.path().join("p.yaml");
    let yaml = simple_pipeline(&repo, "true").replace(
        "        actionTypeId: {category: Build, provider: commands}\n",
        "        actionTypeId: {category: Build, provider: commands}\n        agent: {os: windows}\n",
    );
    assert!(yaml.contains("os: windows"));
    std::fs::write(&definition, yaml).unwrap();
    controller.create_pipeline(&definition);
    let id = controller.start_pipeline("simple");
    let summary = wait_for(
        "the build's waiting reason",
        Duration::from_secs(30),
        || {
            controller.execution(&id)["statusSummary"]
                .as_str()
                .filter(|s| s.starts_with("Build/Run"))
                .map(str::to_string)
        },
    );
    assert!(
        summary.contains("no registered agent can run this action"),
        "{summary}"
    );
    assert!(summary.contains("os=windows"), "{summary}");
    // The source ran on the linux agent; the build waits for a windows one.
    let e = controller.execution(&id);
    assert_eq!(e["stages"][0]["status"], "Succeeded");
    assert_eq!(e["status"], "InProgress");

    // Registered but not connected: the reason changes.
    let windows = dir.path().join("windows");
    controller.join_agent(&windows, "os=windows");
    let summary = wait_for("a new waiting reason", Duration::from_secs(30), || {
        controller.execution(&id)["statusSummary"]
            .as_str()
            .filter(|s| s.contains("registered but not connected"))
            .map(str::to_string)
    });
    assert!(summary.contains("os=windows"), "{summary}");

    // Once it connects, the build runs there.
    let _windows = run_agent(&windows, 1);
    let e = controller.wait_finished(&id, Duration::from_secs(60));
    assert_eq!(e["status"], "Succeeded", "{e:#}");
    let agents = controller.json(&["agent", "list"]);
    let windows_id = agents
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["labels"]["os"] == "windows")
        .unwrap()["id"]
        .clone();
    assert_eq!(
        e["stages"][1]["actions"][0]["attempts"][0]["agentId"],
        windows_id
    );
}

#[test]
fn a_failed_action_fails_the_stage_after_its_in_flight_sibling_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let (controller, _agent) = start_with_agent(dir.path(), &[], 2);
    let repo = git_repo(&dir.path().join("repo"), &[("a.txt", "a\n")]);
    let definition = dir.path().join("p.yaml");
    std::fs::write(
        &definition,
        format!(
            r#"
name: siblings
stages:
  - name: Source
    actions:
      - name: Checkout
        actionTypeId: {{category: Source, provider: git}}
        configuration: {{RepositoryPath: {repo}}}
        outputArtifacts: [Code]
  - name: Test
    actions:
      - name: Broken
        actionTypeId: {{category: Test, provider: commands}}
        configuration: {{Commands: "echo failing; exit 3"}}
        inputArtifacts: [Code]
      - name: Slow
        actionTypeId: {{category: Test, provider: commands}}
        configuration: {{Commands: "sleep 2"}}
        inputArtifacts: [Code]
      - name: Queued
        actionTypeId: {{category: Test, provider: commands}}
        configuration: {{Commands: "true"}}
        inputArtifacts: [Code]
      - name: Later
        actionTypeId: {{category: Test, provider: commands}}
        runOrder: 2
        configuration: {{Commands: "true"}}
        inputArtifacts: [Code]
  - name: Never
    actions:
      - name: Skipped
        actionTypeId: {{category: Build, provider: commands}}
        configuration: {{Commands: "true"}}
        inputArtifacts: [Code]
"#,
            repo = repo.display()
        ),
    )
    .unwrap();
    controller.create_pipeline(&definition);
    let id = controller.start_pipeline("siblings");
    // Follow the logs while the execution runs; the follower ends when the actions do.
    let mut follower = controller
        .cli()
        .args(["logs", &id, "--follow"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let e = controller.wait_finished(&id, Duration::from_secs(60));
    wait_for("logs --follow to end", Duration::from_secs(30), || {
        follower.try_wait().unwrap()
    });
    let mut followed = String::new();
    std::io::Read::read_to_string(&mut follower.stdout.take().unwrap(), &mut followed).unwrap();
    assert!(
        followed.contains("==> Test/Broken (attempt 1) <=="),
        "{followed}"
    );
    assert!(followed.contains("failing"), "{followed}");
    assert!(
        followed.contains("==> Test/Slow (attempt 1) <=="),
        "{followed}"
    );
    assert_eq!(e["status"], "Failed", "{e:#}");
    let test = &e["stages"][1];
    assert_eq!(test["status"], "Failed");
    let action = |name: &str| {
        test["actions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == name)
            .unwrap()
            .clone()
    };
    let broken = &action("Broken")["attempts"][0];
    let slow = &action("Slow")["attempts"][0];
    assert_eq!(broken["status"], "Failed");
    assert!(
        broken["error"].as_str().unwrap().contains("status 3"),
        "{broken}"
    );
    // The sibling was allowed to finish, and the execution ended only after it.
    assert_eq!(slow["status"], "Succeeded");
    assert!(e["finishedAtMs"].as_i64().unwrap() >= slow["finishedAtMs"].as_i64().unwrap());
    assert!(slow["finishedAtMs"].as_i64().unwrap() > broken["finishedAtMs"].as_i64().unwrap());
    // The sibling still waiting for a slot (the agent runs two at a time) never starts.
    let queued = &action("Queued")["attempts"][0];
    assert_eq!(queued["status"], "Abandoned", "{queued}");
    assert!(queued["startedAtMs"].is_null());
    assert!(
        queued["error"]
            .as_str()
            .unwrap()
            .contains("Test/Broken failed first"),
        "{queued}"
    );
    // Nothing after the failure started: not the next runOrder, not the next stage.
    assert!(action("Later")["attempts"].as_array().unwrap().is_empty());
    assert!(e["stages"][2]["status"].is_null());
    assert!(e["statusSummary"].as_str().unwrap().contains("Test/Broken"));
}

#[test]
fn the_quickstart_runs_the_sample_pipeline_and_reuses_its_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("client.toml");
    let data = dir.path().join("data");
    for run_number in 1..=2 {
        let (output, stdout, stderr) = run(sluice(&config)
            .args(["up", "--exit", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data));
        assert!(
            output.status.success(),
            "run {run_number}\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
        assert!(stdout.contains("Result: Succeeded"), "{stdout}");
        assert!(stdout.contains("sluice execution list"), "{stdout}");
    }
    let deployed = data.join("deployed/sample");
    let greet = deployed.join("dist/bin/greet");
    let hello = ok(std::process::Command::new(&greet).arg("Ada"));
    assert_eq!(hello, "Hello, Ada!\n");
    let db = rusqlite::Connection::open(data.join("controller/sluice.db")).unwrap();
    let runs: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM executions WHERE status = 'Succeeded'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(runs, 2);
    let parallel: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM action_attempts a JOIN action_attempts b
             ON a.execution_id = b.execution_id AND a.action_name = 'UnitTests' AND b.action_name = 'Lint'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(parallel, 2);
}

/// Speaks the agent protocol by hand over the agent's real mTLS identity, to send
/// reports an honest agent never would.
#[test]
fn a_report_with_a_stale_fencing_token_is_refused_and_changes_nothing() {
    use futures_util::{SinkExt, StreamExt};
    use sluice_proto::{AgentMessage, AttemptRef, ControllerMessage, Outcome};
    use tokio_tungstenite::tungstenite::Message;

    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(dir.path(), 0, &[]);
    let state = dir.path().join("agent");
    controller.join_agent(&state, "");
    create_simple_pipeline(&controller, dir.path(), "true");
    let id = controller.start_pipeline("simple");

    let tls = sluice_agent::StateDir::new(&state).tls_config().unwrap();
    let port = controller.port;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (offered, replies) = runtime.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .unwrap();
        let url = format!("wss://localhost:{port}{}", sluice_proto::CONNECT_PATH);
        let (socket, _) = tokio_tungstenite::client_async(url.as_str(), stream)
            .await
            .unwrap();
        let (mut sink, mut frames) = socket.split();
        let send = |m: AgentMessage| Message::text(m.encode());
        sink.send(send(AgentMessage::Hello {
            protocol_min: 1,
            protocol_max: 1,
            agent_version: "test".into(),
            labels: Default::default(),
            capacity: 1,
            running: vec![],
        }))
        .await
        .unwrap();
        let mut next = async || loop {
            if let Some(Ok(Message::Text(text))) = frames.next().await {
                return ControllerMessage::decode(&text).unwrap();
            }
        };
        assert!(matches!(next().await, ControllerMessage::Welcome { .. }));
        let ControllerMessage::Offer(job) = next().await else {
            panic!("expected an offer")
        };
        let good = job.attempt.clone();
        let stale = AttemptRef {
            attempt_id: good.attempt_id,
            fencing_token: "0123456789abcdef".into(),
        };
        let mut replies = Vec::new();
        sink.send(send(AgentMessage::Accept(good.clone())))
            .await
            .unwrap();
        sink.send(send(AgentMessage::Log {
            attempt: stale.clone(),
            offset: 0,
            data: "forged\n".into(),
        }))
        .await
        .unwrap();
        replies.push(next().await);
        sink.send(send(AgentMessage::Finished {
            attempt: stale,
            outcome: Outcome::Succeeded {
                summary: "forged".into(),
                output_variables: Default::default(),
                artifacts: vec![],
            },
            log_length: 0,
            log_sha256: String::new(),
            tests: Vec::new(),
        }))
        .await
        .unwrap();
        replies.push(next().await);
        sink.send(send(AgentMessage::Finished {
            attempt: good.clone(),
            outcome: Outcome::Failed {
                message: "honest failure".into(),
            },
            log_length: 0,
            log_sha256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".into(),
            tests: Vec::new(),
        }))
        .await
        .unwrap();
        replies.push(next().await);
        (good, replies)
    });
    for reply in &replies[..2] {
        match reply {
            ControllerMessage::Stale {
                attempt_id,
                message,
            } => {
                assert_eq!(*attempt_id, offered.attempt_id);
                assert!(message.contains("stale fencing token"), "{message}");
            }
            other => panic!("expected Stale, got {other:?}"),
        }
    }
    assert!(
        matches!(replies[2], ControllerMessage::FinishAck { .. }),
        "{:?}",
        replies[2]
    );
    let e = controller.wait_finished(&id, Duration::from_secs(30));
    let attempt = &e["stages"][0]["actions"][0]["attempts"][0];
    assert_eq!(attempt["status"], "Failed");
    assert_eq!(attempt["error"], "honest failure");
    assert!(
        attempt["summary"].is_null(),
        "the forged success must not be recorded"
    );
    assert_eq!(
        attempt["log"]["storedLength"], 0,
        "the forged log must not be stored"
    );
}

#[test]
fn a_controller_can_serve_the_operators_own_certificate() {
    let dir = tempfile::tempdir().unwrap();
    // Any certificate chain the operator has will do; borrow one made by another
    // controller's CA, which the CLI and agents then have to be told to trust.
    let mut issuer = Controller::start(&dir.path().join("issuer"), 0, &[]);
    issuer.kill();
    let tls = issuer.data_dir.join("tls");
    let (cert, key, issuer_ca) = (
        tls.join("server.crt"),
        tls.join("server.key"),
        tls.join("ca.crt"),
    );
    let mut controller = Controller::start(
        &dir.path().join("own"),
        0,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    // The CLI trusts the system roots by default; this issuer is not among them.
    let (output, _, stderr) = run(controller.cli().args(["pipeline", "list"]));
    assert!(!output.status.success());
    assert!(stderr.contains("cannot reach the controller"), "{stderr}");
    controller.ca_override = Some(issuer_ca.clone());
    ok(controller.cli().args(["pipeline", "list"]));

    let (token, fingerprint) = controller.join_token("", "10m");
    let join = |token: &str, state: &str, server_ca: Option<&std::path::Path>| {
        let mut cmd = controller.join_command(token, &fingerprint, &dir.path().join(state));
        if let Some(ca) = server_ca {
            cmd.arg("--server-ca").arg(ca);
        }
        run(&mut cmd)
    };
    let (output, _, stderr) = join(&token, "agent-a", None);
    assert!(!output.status.success());
    assert!(stderr.contains("--server-ca"), "{stderr}");
    let (token, _) = controller.join_token("", "10m");
    let (output, _, stderr) = join(&token, "agent-b", Some(&issuer_ca));
    assert!(output.status.success(), "{stderr}");
    let _agent = run_agent(&dir.path().join("agent-b"), 1);

    create_simple_pipeline(&controller, dir.path(), "cat a.txt");
    let id = controller.start_pipeline("simple");
    assert_eq!(
        controller.wait_finished(&id, Duration::from_secs(60))["status"],
        "Succeeded"
    );
}

#[test]
fn a_flood_of_log_output_is_capped_with_a_visible_marker() {
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(dir.path(), 0, &[]);
    let state = dir.path().join("agent");
    controller.join_agent(&state, "");
    let _agent = run_agent_with_args(&state, &["--max-log-bytes", "65536"]);
    create_simple_pipeline(
        &controller,
        dir.path(),
        "yes flood | head -c 3000000; echo done",
    );
    let id = controller.start_pipeline("simple");
    let e = controller.wait_finished(&id, Duration::from_secs(60));
    assert_eq!(e["status"], "Succeeded", "{e:#}");
    let attempt = &e["stages"][1]["actions"][0]["attempts"][0];
    let stored = attempt["log"]["storedLength"].as_i64().unwrap();
    assert!((65536..70000).contains(&stored), "{stored}");
    // What arrived is exactly what the agent sent, marker included: the log is whole.
    assert_eq!(attempt["log"]["complete"], true);
    let log = controller.logs(&id, "Build/Run");
    assert!(
        log.contains("[sluice] log truncated: this attempt wrote"),
        "{}",
        &log[log.len().saturating_sub(300)..]
    );
}
