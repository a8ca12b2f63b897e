//! The `deploy-http` plugin (Deploy/http) run through the real plugin host against a real
//! HTTP server on 127.0.0.1 that records every request and answers scripted statuses.

mod common;

use sluice_agent::plugin_host::{LoadedPlugin, PluginHost, RunOutcome, RunRequest};
use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tempfile::TempDir;
use tokio::sync::mpsc;

/// The bearer token the tests hand the plugin; it must never show in a log.
const TOKEN: &str = "s3cr3t-hook-token-4711";

fn host() -> &'static PluginHost {
    static HOST: OnceLock<PluginHost> = OnceLock::new();
    HOST.get_or_init(common::builtin_host)
}

/// The built-in plugin with 127.0.0.1 and the secret HOOK_TOKEN granted.
fn plugin() -> LoadedPlugin {
    host()
        .find("Deploy", "http", "1")
        .expect("no plugin for Deploy/http/1")
        .with_grants(sluice_proto::Grants {
            hosts: vec!["127.0.0.1".into()],
            secrets: vec!["HOOK_TOKEN".into()],
            ..Default::default()
        })
}

/// One request as the server received it.
#[derive(Debug, Clone)]
struct Received {
    method: String,
    path: String,
    /// Header names lowercased.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One scripted answer.
struct Reply {
    status: u16,
    headers: Vec<(&'static str, &'static str)>,
    body: &'static str,
}

fn reply(status: u16, body: &'static str) -> Reply {
    Reply {
        status,
        headers: Vec::new(),
        body,
    }
}

/// A small HTTP/1.1 server on its own thread: one request per connection, answered from
/// the script in order (200 "ok" once the script is used up), every request recorded.
struct Server {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Server {
    fn start(script: Vec<Reply>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("local addr");
        let received = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let record = received.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let record = record.clone();
                let script = script.clone();
                std::thread::spawn(move || {
                    if let Some(request) = read_request(&stream) {
                        record.lock().expect("record").push(request);
                        let answer = script
                            .lock()
                            .expect("script")
                            .pop_front()
                            .unwrap_or_else(|| reply(200, "ok"));
                        write_reply(stream, &answer);
                    }
                });
            }
        });
        Server { addr, received }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().expect("received").clone()
    }
}

fn read_request(stream: &TcpStream) -> Option<Received> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    assert!(
        !headers.iter().any(|(n, _)| n == "transfer-encoding"),
        "the test server reads Content-Length bodies only: {headers:?}"
    );
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Received {
        method,
        path,
        headers,
        body,
    })
}

fn write_reply(mut stream: TcpStream, reply: &Reply) {
    let mut head = format!(
        "HTTP/1.1 {} Scripted\r\nContent-Length: {}\r\nContent-Type: text/plain\r\nConnection: close\r\n",
        reply.status,
        reply.body.len()
    );
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(reply.body.as_bytes());
    let _ = stream.flush();
}

struct Workspace {
    dir: TempDir,
}

impl Workspace {
    fn new() -> Workspace {
        Workspace {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn input(&self, name: &str) -> PathBuf {
        let dir = self.dir.path().join("inputs").join(name);
        std::fs::create_dir_all(&dir).expect("input dir");
        dir
    }

    fn request(&self, config: &[(&str, &str)], inputs: &[&str]) -> RunRequest {
        RunRequest {
            workspace: self.dir.path().to_path_buf(),
            pipeline: "shop".to_string(),
            execution_id: "exec-1".to_string(),
            stage: "Deploy".to_string(),
            action: "Notify".to_string(),
            category: "Deploy".to_string(),
            config: config
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            timeout: Duration::from_secs(60),
            attempt: 1,
            secrets: [("HOOK_TOKEN", TOKEN), ("OTHER_TOKEN", "other-value-0815")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }
}

/// Runs the plugin; returns the outcome and the log, which must never hold the token.
async fn run(plugin: &LoadedPlugin, request: RunRequest) -> (RunOutcome, String) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let outcome = host().run(plugin, request, tx).await;
    let mut log = Vec::new();
    while let Ok(chunk) = rx.try_recv() {
        log.extend_from_slice(&chunk);
    }
    let log = String::from_utf8_lossy(&log).into_owned();
    assert!(
        !log.contains(TOKEN),
        "the token leaked into the log:\n{log}"
    );
    assert!(
        !format!("{outcome:?}").contains(TOKEN),
        "the token leaked into the outcome: {outcome:?}"
    );
    (outcome, log)
}

fn succeeded(outcome: RunOutcome, log: &str) -> (String, BTreeMap<String, String>) {
    match outcome {
        RunOutcome::Succeeded {
            summary,
            output_variables,
            ..
        } => (summary, output_variables),
        RunOutcome::Failed { message, .. } => panic!("action failed: {message}\nlog:\n{log}"),
    }
}

fn failed(outcome: RunOutcome, log: &str) -> String {
    match outcome {
        RunOutcome::Failed { message, .. } => message,
        other => panic!("action should have failed: {other:?}\nlog:\n{log}"),
    }
}

#[tokio::test]
async fn a_post_arrives_as_sent_with_headers_and_bearer_token() {
    let server = Server::start(vec![Reply {
        status: 201,
        headers: vec![("X-Reply", "yes")],
        body: r#"{"deployment":"d-42"}"#,
    }]);
    let ws = Workspace::new();
    let url = server.url("/hooks/deploy?env=prod");
    let body = r#"{"commit":"abc123","execution":"exec-1"}"#;
    let (outcome, log) = run(
        &plugin(),
        ws.request(
            &[
                ("Url", &url),
                ("Headers", "X-Environment: production\n\nX-Trace:  t-1  \n"),
                ("Body", body),
                ("TokenSecret", "HOOK_TOKEN"),
            ],
            &[],
        ),
    )
    .await;
    let (summary, variables) = succeeded(outcome, &log);

    let received = server.received();
    assert_eq!(received.len(), 1, "{received:?}");
    let request = &received[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/hooks/deploy?env=prod");
    assert_eq!(String::from_utf8_lossy(&request.body), body);
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(request.header("x-environment"), Some("production"));
    assert_eq!(request.header("x-trace"), Some("t-1"));
    assert_eq!(
        request.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(request.header("user-agent"), Some("sluice-deploy-http/1"));

    assert_eq!(summary, format!("POST {url} → 201 after 1 try"));
    assert_eq!(variables["StatusCode"], "201");
    assert_eq!(variables["ResponseBody"], r#"{"deployment":"d-42"}"#);
    assert!(
        log.contains(&format!("try 1 of 3: POST {url} → 201")),
        "{log}"
    );
    assert!(log.contains(" ms"), "each try logs its time:\n{log}");
    assert!(
        log.contains("bearer token from secret HOOK_TOKEN"),
        "the log names the secret, not its value:\n{log}"
    );
}

#[tokio::test]
async fn a_500_then_a_200_succeeds_after_two_tries() {
    let server = Server::start(vec![
        reply(500, "database is restarting"),
        reply(200, "done"),
    ]);
    let ws = Workspace::new();
    let url = server.url("/hook");
    let (outcome, log) = run(
        &plugin(),
        ws.request(
            &[("Url", &url), ("Method", "PUT"), ("RetryDelaySeconds", "0")],
            &[],
        ),
    )
    .await;
    let (summary, variables) = succeeded(outcome, &log);
    assert_eq!(summary, format!("PUT {url} → 200 after 2 tries"));
    assert_eq!(variables["StatusCode"], "200");
    assert_eq!(variables["ResponseBody"], "done");
    let received = server.received();
    assert_eq!(received.len(), 2);
    assert!(
        received
            .iter()
            .all(|r| r.method == "PUT" && r.body.is_empty())
    );
    assert_eq!(
        received[0].header("content-type"),
        None,
        "no body, no Content-Type"
    );
    assert!(
        log.contains(&format!(
            "try 1 of 3: PUT {url} → 500 Internal Server Error"
        )) && log.contains("database is restarting"),
        "{log}"
    );
    assert!(
        log.contains(&format!("try 2 of 3: PUT {url} → 200")),
        "{log}"
    );
}

#[tokio::test]
async fn a_503_three_times_fails_after_two_retries_honouring_retry_after() {
    let unavailable = || Reply {
        status: 503,
        headers: vec![("Retry-After", "1")],
        body: "maintenance until noon",
    };
    let server = Server::start(vec![unavailable(), unavailable(), unavailable()]);
    let ws = Workspace::new();
    let url = server.url("/hook");
    let started = Instant::now();
    let (outcome, log) = run(
        &plugin(),
        ws.request(
            &[
                ("Url", &url),
                ("Body", "{}"),
                ("Retries", "2"),
                // Retry-After (1 s) wins over this.
                ("RetryDelaySeconds", "30"),
            ],
            &[],
        ),
    )
    .await;
    let elapsed = started.elapsed();
    let message = failed(outcome, &log);
    assert_eq!(server.received().len(), 3);
    assert!(
        message.contains(&format!("POST {url} answered 503"))
            && message.contains("after 3 tries")
            && message.contains("maintenance until noon"),
        "{message}"
    );
    assert!(log.contains("waiting 1 s before try 2 of 3"), "{log}");
    assert!(log.contains("waiting 1 s before try 3 of 3"), "{log}");
    assert!(
        elapsed >= Duration::from_secs(2) && elapsed < Duration::from_secs(20),
        "two waits of 1 s (Retry-After), not 30 s: took {elapsed:?}"
    );
}

#[tokio::test]
async fn a_404_fails_at_once_without_retries() {
    let server = Server::start(vec![reply(404, "no such hook"), reply(200, "never")]);
    let ws = Workspace::new();
    let url = server.url("/missing");
    let (outcome, log) = run(
        &plugin(),
        ws.request(&[("Url", &url), ("Retries", "5")], &[]),
    )
    .await;
    let message = failed(outcome, &log);
    assert_eq!(server.received().len(), 1, "a 404 is not retried");
    assert!(
        message.contains(&format!("POST {url} answered 404 Not Found"))
            && message.contains("not retried")
            && message.contains("no such hook"),
        "{message}"
    );
}

#[tokio::test]
async fn a_failed_answer_quotes_only_the_first_500_bytes_of_its_body() {
    static LONG: OnceLock<String> = OnceLock::new();
    let long: &'static str = LONG.get_or_init(|| format!("{}{}", "a".repeat(500), "b".repeat(700)));
    let server = Server::start(vec![reply(400, long)]);
    let ws = Workspace::new();
    let (outcome, log) = run(&plugin(), ws.request(&[("Url", &server.url("/hook"))], &[])).await;
    let message = failed(outcome, &log);
    assert!(message.contains(&"a".repeat(500)), "{message}");
    assert!(!message.contains("bb"), "{message}");
    assert!(message.contains("[700 more bytes]"), "{message}");
}

#[tokio::test]
async fn expected_status_narrows_success_and_a_2xx_outside_it_is_not_repeated() {
    let server = Server::start(vec![reply(200, "queued?")]);
    let ws = Workspace::new();
    let (outcome, log) = run(
        &plugin(),
        ws.request(
            &[
                ("Url", &server.url("/hook")),
                ("ExpectedStatus", "201, 202"),
            ],
            &[],
        ),
    )
    .await;
    let message = failed(outcome, &log);
    assert_eq!(server.received().len(), 1);
    assert!(
        message.contains("answered 200 OK (ExpectedStatus: 201, 202)"),
        "{message}"
    );
}

#[tokio::test]
async fn send_artifact_sends_a_deterministic_tar_of_the_input_files() {
    let server = Server::start(vec![reply(200, "stored"), reply(200, "stored")]);
    let ws = Workspace::new();
    let input = ws.input("BuildOut");
    std::fs::create_dir_all(input.join("assets/img")).expect("mkdir");
    std::fs::write(input.join("index.html"), "<h1>shop</h1>\n").expect("write");
    std::fs::write(input.join("assets/app.js"), "console.log(1)\n").expect("write");
    std::fs::write(input.join("assets/img/logo.svg"), "<svg/>").expect("write");
    std::os::unix::fs::symlink("index.html", input.join("current")).expect("symlink");

    let url = server.url("/releases/abc123");
    let config = [
        ("Url", url.as_str()),
        ("Method", "PUT"),
        ("SendArtifact", "true"),
        ("ContentType", "application/json"),
    ];
    for _ in 0..2 {
        let (outcome, log) = run(&plugin(), ws.request(&config, &["BuildOut"])).await;
        succeeded(outcome, &log);
    }
    let received = server.received();
    assert_eq!(received.len(), 2);
    assert_eq!(
        received[0].header("content-type"),
        Some("application/x-tar")
    );
    assert_eq!(
        received[0].body, received[1].body,
        "the same files give the same archive"
    );

    let mut archive = tar::Archive::new(received[0].body.as_slice());
    let mut entries = Vec::new();
    for entry in archive.entries().expect("a tar archive") {
        let mut entry = entry.expect("entry");
        let header = entry.header();
        assert_eq!(header.mtime().expect("mtime"), 0);
        assert_eq!(header.uid().expect("uid"), 0);
        let path = entry.path().expect("path").display().to_string();
        let kind = header.entry_type();
        let described = if kind.is_dir() {
            format!("{path}/")
        } else if kind.is_symlink() {
            let target = entry.link_name().expect("link").expect("target");
            format!("{path} -> {}", target.display())
        } else {
            let mut content = String::new();
            entry.read_to_string(&mut content).expect("content");
            format!("{path}: {content}")
        };
        entries.push(described);
    }
    assert_eq!(
        entries,
        [
            "assets/",
            "assets/app.js: console.log(1)\n",
            "assets/img/",
            "assets/img/logo.svg: <svg/>",
            "current -> index.html",
            "index.html: <h1>shop</h1>\n",
        ]
    );
}

#[tokio::test]
async fn body_and_send_artifact_together_are_refused_before_any_request() {
    let server = Server::start(vec![]);
    let ws = Workspace::new();
    ws.input("BuildOut");
    let (outcome, log) = run(
        &plugin(),
        ws.request(
            &[
                ("Url", &server.url("/hook")),
                ("Body", "{}"),
                ("SendArtifact", "true"),
            ],
            &["BuildOut"],
        ),
    )
    .await;
    let message = failed(outcome, &log);
    assert!(
        message.contains("invalid configuration")
            && message.contains("Body and SendArtifact = true cannot be used together"),
        "{message}"
    );
    assert!(server.received().is_empty());
}

#[tokio::test]
async fn a_host_that_is_not_granted_is_refused_and_never_reached() {
    let server = Server::start(vec![]);
    let ws = Workspace::new();
    // The same server under a name that is not granted (only 127.0.0.1 is).
    let url = format!("http://localhost:{}/hook", server.addr.port());
    let (outcome, log) = run(
        &plugin(),
        ws.request(
            &[("Url", &url), ("Body", "{}"), ("RetryDelaySeconds", "0")],
            &[],
        ),
    )
    .await;
    let message = failed(outcome, &log);
    assert!(message.contains("host:localhost"), "{message}");
    assert!(
        message.contains("sluice plugin grant deploy-http host:localhost"),
        "{message}"
    );
    assert!(server.received().is_empty(), "the server saw a request");
    assert!(
        !log.contains("try 2 of"),
        "a refusal is not retried:\n{log}"
    );
}

#[tokio::test]
async fn a_token_secret_that_is_not_granted_is_refused_naming_it() {
    let server = Server::start(vec![]);
    let ws = Workspace::new();
    let (outcome, log) = run(
        &plugin(),
        ws.request(
            &[
                ("Url", &server.url("/hook")),
                ("TokenSecret", "OTHER_TOKEN"),
            ],
            &[],
        ),
    )
    .await;
    let message = failed(outcome, &log);
    assert!(message.contains("secret:OTHER_TOKEN"), "{message}");
    assert!(!message.contains("other-value-0815"), "{message}");
    assert!(!log.contains("other-value-0815"), "{log}");
    assert!(server.received().is_empty(), "the server saw a request");
}

#[tokio::test]
async fn a_connection_error_is_retried_then_fails_naming_it() {
    // A port nobody listens on: bind one, then close it.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let ws = Workspace::new();
    let url = format!("http://127.0.0.1:{port}/hook");
    let (outcome, log) = run(
        &plugin(),
        ws.request(
            &[("Url", &url), ("Retries", "1"), ("RetryDelaySeconds", "0")],
            &[],
        ),
    )
    .await;
    let message = failed(outcome, &log);
    assert!(
        message.contains(&format!(
            "POST {url} failed after 2 tries (Retries = 1): Connection refused"
        )),
        "{message}"
    );
    assert!(log.contains("try 2 of 2"), "{log}");
}
