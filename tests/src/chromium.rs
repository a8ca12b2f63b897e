//! Headless Chromium for the browser tests and the page-load benchmark: Debian's
//! `chromium` driven through its `chromedriver` (WebDriver, with `fantoccini`), plus
//! DevTools protocol commands through chromedriver's `goog/cdp/execute`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder};
use serde_json::{Value, json};

use crate::{Process, free_port, wait_for};

/// Debian's Chromium.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Debian's chromedriver for it.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Fails, saying what to install, unless Chromium and chromedriver are there.
pub fn check_installed() -> Result<()> {
    for path in [CHROMEDRIVER, CHROMIUM] {
        if !Path::new(path).exists() {
            bail!(
                "{path} is missing: the browser tests and the page-load benchmark need \
                 Debian's chromium and chromium-driver packages \
                 (apt-get install -y chromium chromium-driver)"
            );
        }
    }
    Ok(())
}

/// A WebDriver session in a fresh headless Chromium with its own profile. Dropping
/// it kills chromedriver and the Chromium it started (close the client first for a
/// clean end), then removes the profile.
pub struct Session {
    /// The WebDriver client.
    pub client: Client,
    _driver: Process,
    _profile: tempfile::TempDir,
}

impl Session {
    /// Starts chromedriver on a free port and opens a session in a window of
    /// `width` x `height`.
    pub async fn open(width: u32, height: u32) -> Result<Session> {
        check_installed()?;
        let port = free_port();
        let driver = Process::spawn(
            Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        wait_for("chromedriver to listen", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .ok()
                .map(|_| ())
        });
        let profile = tempfile::tempdir()?;
        let capabilities = json!({
            "browserName": "chrome",
            // The controller's certificate is signed by its own CA.
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--hide-scrollbars",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("a JSON object literal")
        };
        // The WebDriver endpoint is plain HTTP on the loopback: no TLS needed.
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .context("starting a Chromium session through chromedriver")?;
        Ok(Session {
            client,
            _driver: driver,
            _profile: profile,
        })
    }

    /// Runs a DevTools protocol command (such as `Emulation.setEmulatedMedia`).
    pub async fn cdp(&self, cmd: &'static str, params: Value) -> Result<Value> {
        self.client
            .issue_cmd(Cdp { cmd, params })
            .await
            .with_context(|| format!("DevTools command {cmd}"))
    }
}

/// A DevTools protocol command, through chromedriver's `goog/cdp/execute`.
#[derive(Debug)]
struct Cdp {
    cmd: &'static str,
    params: Value,
}

impl WebDriverCompatibleCommand for Cdp {
    fn endpoint(
        &self,
        base_url: &reqwest::Url,
        session_id: Option<&str>,
    ) -> Result<reqwest::Url, url_error::ParseError> {
        base_url.join(&format!(
            "session/{}/goog/cdp/execute",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &reqwest::Url) -> (reqwest::Method, Option<String>) {
        let body = json!({ "cmd": self.cmd, "params": self.params });
        (reqwest::Method::POST, Some(body.to_string()))
    }
}

/// `url::ParseError`, named through the `url` crate reqwest re-exports its `Url` from.
mod url_error {
    pub type ParseError = <reqwest::Url as std::str::FromStr>::Err;
}
