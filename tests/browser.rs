//! Real-browser tests of the web UI: headless Chromium driven through chromedriver
//! (WebDriver, with the `fantoccini` crate) against real controller and agent
//! processes running real pipelines.
//!
//! Needs Debian's `chromium` and `chromium-driver` (/usr/bin/chromium and
//! /usr/bin/chromedriver); without them the tests fail and say so. They also write
//! the README's screenshots to docs/screenshots/ (at 1280x800, phone.png at 390x844),
//! overwriting them on each run.
//!
//! Every wait is an explicit poll of the page (or of the CLI) with a timeout.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fantoccini::{Client, Locator};
use serde_json::{Value, json};
use sluice_e2e::*;

const PASSWORD: &str = "browser-test-password";
/// How long any one wait on the page may take.
const TIMEOUT: Duration = Duration::from_secs(20);
/// The window (and so the screenshots) size.
const WIDTH: u32 = 1280;
const HEIGHT: u32 = 800;

/// A WebDriver session in a fresh headless Chromium, at `base` (the controller's URL).
/// Its methods block: each runs the WebDriver calls on the browser's own runtime.
struct Browser {
    session: Option<chromium::Session>,
    rt: tokio::runtime::Runtime,
    base: String,
}

impl Browser {
    fn open(base: &str) -> Browser {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let session = rt
            .block_on(chromium::Session::open(WIDTH, HEIGHT))
            .unwrap_or_else(|e| panic!("{e:#}"));
        let browser = Browser {
            session: Some(session),
            rt,
            base: base.to_string(),
        };
        browser.size_viewport();
        browser
    }

    /// Sizes the window so the page's viewport (what a screenshot shows) is
    /// WIDTH x HEIGHT: headless Chromium still subtracts room for its toolbars.
    fn size_viewport(&self) {
        self.resize_viewport(WIDTH, HEIGHT);
    }

    /// Sizes the window so the page's viewport is `width` x `height`.
    fn resize_viewport(&self, width: u32, height: u32) {
        self.block(async |c| {
            c.set_window_size(width, height).await.unwrap();
            let inner = c
                .execute("return [window.innerWidth, window.innerHeight]", vec![])
                .await
                .unwrap();
            let inner = |i: usize| inner[i].as_u64().unwrap() as u32;
            let (outer_w, outer_h) = (2 * width - inner(0), 2 * height - inner(1));
            c.set_window_size(outer_w, outer_h).await.unwrap();
        });
    }

    /// Runs `f` with the session, on the browser's runtime.
    fn block<T>(&self, f: impl AsyncFnOnce(&Client) -> T) -> T {
        let client = &self.session.as_ref().unwrap().client;
        self.rt.block_on(f(client))
    }

    /// Runs a DevTools protocol command in the page.
    fn cdp(&self, cmd: &'static str, params: Value) -> Value {
        let session = self.session.as_ref().unwrap();
        self.rt
            .block_on(session.cdp(cmd, params))
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Opens `path` (such as `/#/pipelines/x`) on the controller.
    fn goto(&self, path: &str) {
        let url = format!("{}{path}", self.base);
        self.block(async |c| c.goto(&url).await.unwrap());
    }

    /// Reloads the page.
    fn reload(&self) {
        self.block(async |c| c.refresh().await.unwrap());
    }

    /// The page's visible text, to explain a failed wait.
    fn page_text(&self) -> String {
        self.block(
            async |c| match c.execute("return document.body.innerText", vec![]).await {
                Ok(Value::String(text)) => text,
                other => format!("(no page text: {other:?})"),
            },
        )
    }

    /// Polls `check` against the page until it returns Some; panics after TIMEOUT
    /// with what the page showed.
    fn poll<T>(&self, what: &str, check: impl AsyncFnMut(&Client) -> Option<T>) -> T {
        self.poll_for(what, TIMEOUT, check)
    }

    /// [`Browser::poll`] with its own timeout, for what takes longer by nature.
    fn poll_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl AsyncFnMut(&Client) -> Option<T>,
    ) -> T {
        let start = Instant::now();
        let found = self.block(async |c| {
            loop {
                if let Some(value) = check(c).await {
                    return Some(value);
                }
                if start.elapsed() > timeout {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        found.unwrap_or_else(|| {
            panic!(
                "timed out after {timeout:?} waiting for {what}; the page shows:\n{}",
                self.page_text()
            )
        })
    }

    /// The text of the first element matching `css`, if there is one.
    async fn text_of(c: &Client, css: &str) -> Option<String> {
        c.find(Locator::Css(css)).await.ok()?.text().await.ok()
    }

    /// Waits until the element `css` exists and its text satisfies `ok`; returns the text.
    fn wait_text(&self, css: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
        self.poll(&format!("{css} to show {what}"), async |c| {
            let text = Self::text_of(c, css).await?;
            ok(&text).then_some(text)
        })
    }

    /// Waits until the element `css` contains `needle`; returns its text.
    fn wait_contains(&self, css: &str, needle: &str) -> String {
        self.wait_text(css, &format!("{needle:?}"), |t| t.contains(needle))
    }

    /// Waits until an element matches `css`.
    fn wait_present(&self, css: &str) {
        self.poll(&format!("{css} to appear"), async |c| {
            c.find(Locator::Css(css)).await.ok().map(|_| ())
        });
    }

    /// Waits until no element matches `css`.
    fn wait_absent(&self, css: &str) {
        self.poll(&format!("{css} to go away"), async |c| {
            c.find_all(Locator::Css(css))
                .await
                .ok()
                .filter(|found| found.is_empty())
                .map(|_| ())
        });
    }

    /// How many elements match `css`.
    fn count(&self, css: &str) -> usize {
        self.block(async |c| c.find_all(Locator::Css(css)).await.unwrap().len())
    }

    /// Clicks the element `css` once it exists and is enabled.
    fn click(&self, css: &str) {
        self.poll(&format!("{css} to be clickable"), async |c| {
            let element = c.find(Locator::Css(css)).await.ok()?;
            if !element.is_enabled().await.ok()? {
                return None;
            }
            // A re-render may replace the element between find and click: try again.
            element.click().await.ok()
        });
    }

    /// Replaces the value of the input `css` with `text`, typed key by key.
    fn type_into(&self, css: &str, text: &str) {
        self.poll(&format!("{css} to take input"), async |c| {
            let element = c.find(Locator::Css(css)).await.ok()?;
            element.clear().await.ok()?;
            element.send_keys(text).await.ok()?;
            (element.prop("value").await.ok()?.as_deref() == Some(text)).then_some(())
        });
    }

    /// Runs `script` in the page; returns what it returns.
    fn script(&self, script: &str) -> Value {
        self.block(async |c| c.execute(script, vec![]).await.unwrap())
    }

    /// The current URL's fragment (the UI's route).
    fn route(&self) -> String {
        self.block(async |c| {
            c.current_url()
                .await
                .unwrap()
                .fragment()
                .unwrap_or("")
                .to_string()
        })
    }

    /// Saves a PNG screenshot of the window as docs/screenshots/`name`.
    fn screenshot(&self, name: &str) {
        let png = self.block(async |c| c.screenshot().await.unwrap());
        assert_eq!(&png[1..4], b"PNG", "not a PNG");
        // The IHDR chunk: width and height, big-endian, at bytes 16..24.
        let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
        let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
        let viewport = self.script("return [window.innerWidth, window.innerHeight]");
        let expected = (
            viewport[0].as_u64().unwrap() as u32,
            viewport[1].as_u64().unwrap() as u32,
        );
        assert_eq!((width, height), expected, "screenshot {name}");
        let dir = screenshots_dir();
        std::fs::create_dir_all(&dir).unwrap();
        // Written whole then renamed, so a concurrent reader never sees half a PNG.
        let tmp = dir.join(format!(".{name}.{}", std::process::id()));
        std::fs::write(&tmp, png).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }

    /// Signs in as admin from the sign-in form and waits for the signed-in shell.
    fn sign_in(&self) {
        self.goto("/");
        self.wait_present("[data-test=signin-form]");
        self.type_into("input[name=password]", PASSWORD);
        self.click("[data-test=signin-form] button[type=submit]");
        self.wait_text("[data-test=user]", "admin", |t| t == "admin");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            // Ends the session, which quits Chromium; the driver is killed after.
            let _ = self.rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(5), session.client.clone().close()).await
            });
        }
    }
}

fn screenshots_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("docs")
        .join("screenshots")
}

/// A controller whose admin password is PASSWORD, with one agent.
fn controller(root: &Path) -> (Controller, Process) {
    start_with_agent(root, &["--admin-password", PASSWORD], 4)
}

/// Writes and creates a pipeline `name`: a Source stage (a directory snapshot of an
/// `index.html`) followed by `stages`.
fn create(controller: &Controller, dir: &Path, stages: Pipeline) {
    controller.create_pipeline(
        &stages
            .source_file("index.html", "<h1>hello</h1>\n")
            .write(dir),
    );
}

/// The status badge of stage `stage` on the pipeline page.
fn stage_status(stage: &str) -> String {
    format!("[data-test='stage-{stage}'] > header .status")
}

/// The status badge of action `action` on the pipeline page.
fn action_status(action: &str) -> String {
    format!("[data-test='action-{action}'] > header .status")
}

#[test]
fn signing_in_and_out() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let (controller, _agent) = controller(dir.path());
    // A few pipelines for the overview: one green, one red, one never run.
    create(
        &controller,
        dir.path(),
        Pipeline::new("web-frontend")
            .build("Build", "Compile", "echo built")
            .build("Deploy", "Publish", "echo published"),
    );
    create(
        &controller,
        dir.path(),
        Pipeline::new("billing-api")
            .build("Build", "Test", "echo 1 test failed; exit 1")
            .build("Deploy", "Publish", "echo published"),
    );
    create(
        &controller,
        dir.path(),
        Pipeline::new("docs-site").build("Build", "Render", "echo rendered"),
    );
    let green = controller.start_pipeline("web-frontend");
    let red = controller.start_pipeline("billing-api");
    assert_eq!(
        controller.wait_finished(&green, Duration::from_secs(30))["status"],
        "Succeeded"
    );
    assert_eq!(
        controller.wait_finished(&red, Duration::from_secs(30))["status"],
        "Failed"
    );

    let browser = Browser::open(&controller.url);
    browser.goto("/");
    browser.wait_present("[data-test=signin-form] input[name=password]");
    browser.screenshot("signin.png");

    // A wrong password: the form says so and stays.
    browser.type_into("input[name=password]", "not-the-password");
    browser.click("[data-test=signin-form] button[type=submit]");
    browser.wait_contains("[data-test=signin-error]", "wrong user name or password");
    assert_eq!(browser.count("[data-test=user]"), 0);

    // The right one: the overview, with every pipeline and its latest status.
    browser.type_into("input[name=password]", PASSWORD);
    browser.click("[data-test=signin-form] button[type=submit]");
    browser.wait_text("[data-test=user]", "admin", |t| t == "admin");
    browser.wait_contains("main h1", "Pipelines");
    browser.wait_contains("main .count", "3 of 3 pipelines");
    browser.wait_contains("[data-test=pipeline-web-frontend] .latest", "Succeeded");
    browser.wait_contains("[data-test=pipeline-billing-api] .latest", "Failed");
    browser.wait_contains("[data-test=pipeline-docs-site] .change", "never run");
    browser.screenshot("overview.png");

    // A reload keeps the session (the cookie), and shows the overview again.
    browser.script("window.beforeReload = true");
    browser.reload();
    browser.wait_text("[data-test=user]", "admin", |t| t == "admin");
    assert_eq!(browser.script("return window.beforeReload === true"), false);
    browser.wait_contains("main .count", "3 of 3 pipelines");
    assert_eq!(browser.count("[data-test=signin-form]"), 0);

    // Signing out returns to the form, and a reload does not bring the session back.
    browser.click("[data-test=sign-out]");
    browser.wait_present("[data-test=signin-form]");
    browser.wait_absent("[data-test=user]");
    browser.reload();
    browser.wait_present("[data-test=signin-form]");
    assert_eq!(browser.count("[data-test=user]"), 0);
    eprintln!("signing_in_and_out took {:?}", started.elapsed());
}

#[test]
fn an_execution_goes_green_live_on_the_pipeline_page() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let (controller, _agent) = controller(dir.path());
    create(
        &controller,
        dir.path(),
        Pipeline::new("web-frontend")
            .build("Build", "Compile", "sleep 2; echo built 42 files")
            .build("Deploy", "Publish", "echo published"),
    );

    let browser = Browser::open(&controller.url);
    browser.sign_in();
    browser.goto("/#/pipelines/web-frontend");
    // Before any execution, the stages of the definition, none started.
    for stage in ["Source", "Build", "Deploy"] {
        browser.wait_contains(&stage_status(stage), "Not started");
    }
    assert_eq!(browser.count("[data-test=execution-bar]"), 0);
    // Marks this page, to prove nothing below reloads it.
    browser.script("window.sluiceTestPage = 'kept'");

    let id = controller.start_pipeline("web-frontend");
    browser.wait_contains("[data-test=execution-bar]", &id[..8]);
    // The long Build action is seen running, then everything turns green.
    browser.wait_contains(&action_status("Compile"), "In progress");
    browser.wait_contains(&stage_status("Build"), "In progress");
    for stage in ["Source", "Build", "Deploy"] {
        browser.wait_contains(&stage_status(stage), "Succeeded");
    }
    for action in ["Snapshot", "Compile", "Publish"] {
        browser.wait_contains(&action_status(action), "Succeeded");
    }
    browser.wait_contains("[data-test=execution-bar] > .status", "Succeeded");
    // Each card names the agent that ran it (by name, its id on hover).
    let agents = controller.json(&["agent", "list"]);
    let agent_name = agents[0]["name"].as_str().unwrap();
    browser.wait_contains(
        "[data-test='action-Compile'] [data-test=action-agent]",
        agent_name,
    );
    assert_eq!(
        browser.script("return window.sluiceTestPage"),
        "kept",
        "the page was reloaded"
    );
    assert_eq!(controller.execution(&id)["status"], "Succeeded");
    // The recent executions list shows it too.
    browser.wait_contains(".execution-list li", "Succeeded");
    browser.screenshot("pipeline.png");
    eprintln!(
        "an_execution_goes_green_live_on_the_pipeline_page took {:?}",
        started.elapsed()
    );
}

#[test]
fn the_pipeline_page_stays_live_and_correct_across_a_controller_restart() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let flags = ["--admin-password", PASSWORD];
    let (mut controller, _agent) = start_with_agent_on(dir.path(), port, &flags, 4);
    create(
        &controller,
        dir.path(),
        Pipeline::new("resilient")
            .build("Build", "Compile", "sleep 3; echo built")
            .build("Deploy", "Publish", "echo published"),
    );
    let browser = Browser::open(&controller.url);
    browser.sign_in();
    browser.goto("/#/pipelines/resilient");
    browser.wait_contains(&stage_status("Deploy"), "Not started");
    browser.script("window.sluiceTestPage = 'kept'");
    let id = controller.start_pipeline("resilient");
    browser.wait_contains(&action_status("Compile"), "In progress");

    // The controller dies while Compile runs; the agent finishes it meanwhile and
    // reports it once the controller is back. Everything after happens while the page's
    // event stream is down or reconnecting: the page must catch up by itself.
    controller.kill();
    let controller = Controller::start(dir.path(), port, &flags);
    assert_eq!(
        controller.wait_finished(&id, Duration::from_secs(60))["status"],
        "Succeeded"
    );
    for stage in ["Source", "Build", "Deploy"] {
        browser.wait_contains(&stage_status(stage), "Succeeded");
    }
    browser.wait_contains("[data-test=execution-bar] > .status", "Succeeded");

    // And it is still live: a second run shows up and goes green without a reload.
    let second = controller.start_pipeline("resilient");
    browser.wait_contains("[data-test=execution-bar]", &second[..8]);
    browser.wait_contains("[data-test=execution-bar] > .status", "Succeeded");
    assert_eq!(
        browser.script("return window.sluiceTestPage"),
        "kept",
        "the page was reloaded"
    );
    eprintln!(
        "the_pipeline_page_stays_live_and_correct_across_a_controller_restart took {:?}",
        started.elapsed()
    );
}

#[test]
fn approving_from_the_pipeline_page() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let (controller, _agent) = controller(dir.path());
    create(
        &controller,
        dir.path(),
        Pipeline::new("gate")
            .stage(
                r#"  - name: Review
    actions:
      - name: Release
        actionTypeId: {category: Approval, owner: Sluice, provider: manual, version: "1"}
"#,
            )
            .build("Ship", "Publish", "echo shipped"),
    );

    let browser = Browser::open(&controller.url);
    browser.sign_in();
    browser.goto("/#/pipelines/gate");
    // Started with the page's own Start button; the page then shows that execution.
    browser.click("[data-test=start-open]");
    browser.click("[data-test=start-submit]");
    let route = browser.poll("the route to name the new execution", async |c| {
        let url = c.current_url().await.ok()?;
        url.fragment()
            .filter(|f| f.contains("execution="))
            .map(str::to_string)
    });
    let id = route.rsplit('=').next().unwrap().to_string();
    assert_eq!(browser.route(), route);
    assert_eq!(controller.execution(&id)["pipelineName"], "gate");

    // The approval waits; approve it with a comment.
    browser.wait_contains(&action_status("Release"), "In progress");
    let comment = "Checked staging, ship it";
    browser.type_into(
        "[data-test='action-Release'] [data-test=approval-comment]",
        comment,
    );
    browser.click("[data-test='action-Release'] [data-test=approve]");

    // It says who approved it, and the execution goes on to the end.
    let decision = browser.wait_contains(
        "[data-test='action-Release'] [data-test=approval-decision]",
        "Approved by admin",
    );
    assert!(decision.contains(comment), "{decision}");
    browser.wait_absent("[data-test=approval-comment]");
    for stage in ["Review", "Ship"] {
        browser.wait_contains(&stage_status(stage), "Succeeded");
    }
    browser.wait_contains("[data-test=execution-bar] > .status", "Succeeded");
    let done = controller.wait_finished(&id, Duration::from_secs(20));
    assert_eq!(done["status"], "Succeeded", "{done:#}");
    let approval = &done["stages"][1]["actions"][0]["attempts"][0]["approval"];
    assert_eq!(approval["decision"], "Approved", "{done:#}");
    assert_eq!(approval["decidedBy"], "admin", "{done:#}");
    assert_eq!(approval["comment"], comment, "{done:#}");
    eprintln!(
        "approving_from_the_pipeline_page took {:?}",
        started.elapsed()
    );
}

#[test]
fn disabling_and_enabling_a_transition_from_the_pipeline_page() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let (controller, _agent) = controller(dir.path());
    create(
        &controller,
        dir.path(),
        Pipeline::new("gated")
            .build("Build", "Compile", "echo built")
            .build("Ship", "Publish", "echo shipped"),
    );

    let browser = Browser::open(&controller.url);
    browser.sign_in();
    browser.goto("/#/pipelines/gated");
    let ship = "[data-test='stage-Ship'] [data-test=transition]";
    browser.wait_contains(ship, "Transition enabled");
    browser.type_into(
        &format!("{ship} [data-test=transition-reason]"),
        "release freeze",
    );
    browser.click(&format!("{ship} [data-test=transition-disable]"));
    let transitions = wait_for(
        "the transition into Ship to be disabled",
        Duration::from_secs(10),
        || {
            let t = controller.json(&["pipeline", "transitions", "gated"]);
            (t[0]["enabled"] == false).then_some(t)
        },
    );
    assert_eq!(transitions[0]["stageName"], "Ship", "{transitions:#}");
    assert_eq!(transitions[0]["enabled"], false, "{transitions:#}");
    assert_eq!(
        transitions[0]["reason"], "release freeze",
        "{transitions:#}"
    );
    assert_eq!(transitions[0]["changedBy"], "admin", "{transitions:#}");

    // The next execution waits in front of Ship.
    let id = controller.start_pipeline("gated");
    let waiting = controller.wait_waiting(&id, "Ship", Duration::from_secs(20));
    assert_eq!(waiting["status"], "InProgress", "{waiting:#}");
    browser.wait_contains(
        "[data-test=execution-bar]",
        "the transition into stage Ship is disabled: release freeze",
    );
    browser.wait_contains(&stage_status("Build"), "Succeeded");
    browser.wait_contains(&stage_status("Ship"), "Not started");
    // The page shows the transition disabled, by whom and why.
    let shown = browser.wait_contains(ship, "Transition disabled");
    assert!(shown.contains("by admin"), "{shown}");
    assert!(shown.contains("release freeze"), "{shown}");

    // Enabled again, the execution goes on.
    browser.click(&format!("{ship} [data-test=transition-enable]"));
    browser.wait_contains(ship, "Transition enabled");
    let done = controller.wait_finished(&id, Duration::from_secs(20));
    assert_eq!(done["status"], "Succeeded", "{done:#}");
    assert!(done["waitingForStage"].is_null(), "{done:#}");
    browser.wait_contains(&stage_status("Ship"), "Succeeded");
    browser.wait_contains("[data-test=execution-bar] > .status", "Succeeded");
    let transitions = controller.json(&["pipeline", "transitions", "gated"]);
    assert_eq!(transitions[0]["enabled"], true, "{transitions:#}");
    eprintln!(
        "disabling_and_enabling_a_transition_from_the_pipeline_page took {:?}",
        started.elapsed()
    );
}

#[test]
fn following_a_log_live_with_colours_search_and_line_links() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let (controller, _agent) = controller(dir.path());
    // Lines arrive over a few seconds; one is red; the last comes after a pause.
    create(
        &controller,
        dir.path(),
        Pipeline::new("chatty").stage(
            "  - name: Build
    actions:
      - name: Talk
        actionTypeId: {category: Build, provider: commands}
        inputArtifacts: [Code]
        configuration:
          Commands: |
            for i in $(seq 1 30); do echo \"line $i\"; sleep 0.05; done
            printf '\\033[31mred alert\\033[0m\\n'
            sleep 3
            echo finished-marker
",
        ),
    );
    let browser = Browser::open(&controller.url);
    browser.sign_in();
    let id = controller.start_pipeline("chatty");
    let running = controller.wait_phase(&id, 1, "running", Duration::from_secs(30));
    let attempt = running["stages"][1]["actions"][0]["attempts"][0]["id"].clone();
    browser.goto(&format!("/#/executions/{id}?attempt={attempt}"));
    browser.script("window.sluiceTestPage = 'kept'");
    // The running attempt's log is tailed live: early lines, then the last one,
    // without reloading the page.
    browser.wait_contains("[data-test=log-view]", "line 3");
    browser.wait_contains("[data-test=log-view]", "finished-marker");
    assert_eq!(browser.script("return window.sluiceTestPage"), "kept");
    // Colours are rendered, not shown as escape codes.
    let colours = browser.script(
        "const colour = (text) => {
           const line = [...document.querySelectorAll('[data-test=log-line]')]
             .find((l) => l.textContent.includes(text));
           if (!line) return 'missing';
           const spans = [...line.querySelectorAll('span')].filter((s) => s.textContent.includes(text));
           const inner = spans[spans.length - 1] || line;
           return getComputedStyle(inner).color;
         };
         return [colour('red alert'), colour('finished-marker')];",
    );
    let (red, plain) = (colours[0].as_str().unwrap(), colours[1].as_str().unwrap());
    assert!(red.starts_with("rgb("), "{red}");
    assert_ne!(red, plain, "the red line has the colour of a plain one");
    let shown = browser.wait_contains("[data-test=log-view]", "red alert");
    assert!(
        !shown.contains("[31m") && !shown.contains('\u{1b}'),
        "{shown}"
    );
    // Once the attempt ends, the log is complete.
    browser.poll("the log to be complete", async |c| {
        let view = c.find(Locator::Css("[data-test=log-view]")).await.ok()?;
        let state = view.attr("data-log-state").await.ok()??;
        (state == "complete").then_some(())
    });
    // Search finds matches and says how many.
    browser.type_into("[data-test=log-search]", "line 1");
    let count = browser.wait_text("[data-test=log-search-count]", "search count", |t| {
        t.contains("match")
    });
    assert!(count.contains("11 matches"), "{count}");
    // A line number is a link to that line.
    browser.click("[data-test=log-line][data-line='2'] [data-test=log-line-number]");
    let route = browser.route();
    assert!(route.contains("line=2"), "{route}");
    browser.screenshot("execution.png");
    eprintln!(
        "following_a_log_live_with_colours_search_and_line_links took {:?}",
        started.elapsed()
    );
}

#[test]
fn a_50_mb_log_opens_without_freezing_the_page() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let (controller, _agent) = controller(dir.path());
    // 720,000 numbered lines of about 73 bytes, each with a colour: 52 MB.
    create(
        &controller,
        dir.path(),
        Pipeline::new("verbose").stage(BIG_LOG_STAGE),
    );
    let id = controller.start_pipeline("verbose");
    let done = controller.wait_finished(&id, Duration::from_secs(300));
    assert_eq!(done["status"], "Succeeded", "{done:#}");
    let attempt = &done["stages"][1]["actions"][0]["attempts"][0];
    let stored = attempt["log"]["storedLength"].as_u64().unwrap();
    assert!(stored > 50 << 20, "the log is only {stored} bytes");
    eprintln!("the 50 MB log was produced in {:?}", started.elapsed());

    let browser = Browser::open(&controller.url);
    browser.sign_in();
    browser.goto(&format!("/#/executions/{id}?attempt={}", attempt["id"]));
    browser.wait_contains("[data-test=log-view]", "line 1 ok");
    browser.poll_for(
        "the whole log to load",
        Duration::from_secs(120),
        async |c| {
            let view = c.find(Locator::Css("[data-test=log-view]")).await.ok()?;
            let state = view.attr("data-log-state").await.ok()??;
            (state == "complete").then_some(())
        },
    );
    // Only the lines in view are in the page, not 720,000 of them.
    let rendered = browser.count("[data-test=log-line]");
    assert!((1..300).contains(&rendered), "{rendered} lines rendered");
    // Search reaches the end of the log, and "next" shows the match.
    browser.type_into("[data-test=log-search]", "line 719999 ");
    let count = browser.poll_for("the search to finish", Duration::from_secs(60), async |c| {
        let text = Browser::text_of(c, "[data-test=log-search-count]").await?;
        (text.contains("match") && !text.contains('+')).then_some(text)
    });
    assert!(count.contains("1 match"), "{count}");
    browser.click("[data-test=log-search-next]");
    browser.wait_contains("[data-test=log-match-current]", "line 719999");
    // A link to a line far down opens with that line shown (the log's first three
    // lines are the agent's, so printed line 400,000 is log line 400,003).
    browser.goto(&format!(
        "/#/executions/{id}?attempt={}&line=400003",
        attempt["id"]
    ));
    browser.wait_contains("[data-test=log-line][data-line='400003']", "line 400000 ok");
    assert!(browser.count("[data-test=log-line]") < 300);
    eprintln!(
        "a_50_mb_log_opens_without_freezing_the_page took {:?}",
        started.elapsed()
    );
}

#[test]
fn a_failed_test_case_is_shown_with_its_message() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let (controller, _agent) = controller(dir.path());
    let source = dir.path().join("reports-src");
    std::fs::create_dir_all(source.join("reports")).unwrap();
    std::fs::write(
        source.join("reports").join("unit.xml"),
        r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuite name="cart" tests="3" failures="1" time="0.9">
  <testcase classname="cart.Totals" name="adds_tax" time="0.2"/>
  <testcase classname="cart.Totals" name="rounds_half_up" time="0.5">
    <failure message="expected 10.05 but was 10.04">assertion failed at cart.rs:42</failure>
  </testcase>
  <testcase classname="cart.Totals" name="empty_cart" time="0.2"/>
</testsuite>
"#,
    )
    .unwrap();
    controller.create_pipeline(
        &Pipeline::new("cart")
            .source_dir(&source)
            .stage(
                "  - name: Test
    actions:
      - name: Unit
        actionTypeId: {category: Test, owner: Sluice, provider: junit, version: \"1\"}
        inputArtifacts: [Code]
        configuration: {ReportPaths: \"reports/*.xml\"}
",
            )
            .write(dir.path()),
    );
    let id = controller.start_pipeline("cart");
    let done = controller.wait_finished(&id, Duration::from_secs(60));
    assert_eq!(done["status"], "Failed", "{done:#}");

    let browser = Browser::open(&controller.url);
    browser.sign_in();
    browser.goto(&format!("/#/executions/{id}"));
    let totals = browser.wait_contains("[data-test=test-totals]", "3");
    assert!(totals.contains("1"), "{totals}");
    let failure = browser.wait_contains("[data-test=test-failure]", "rounds_half_up");
    assert!(
        failure.contains("expected 10.05 but was 10.04"),
        "{failure}"
    );
    assert_eq!(browser.count("[data-test=test-failure]"), 1);
    browser.screenshot("tests.png");
    eprintln!(
        "a_failed_test_case_is_shown_with_its_message took {:?}",
        started.elapsed()
    );
}

#[test]
fn the_pages_work_by_keyboard_and_at_phone_width() {
    let dir = tempfile::tempdir().unwrap();
    let (controller, _agent) = controller(dir.path());
    create(
        &controller,
        dir.path(),
        Pipeline::new("mobile-shop")
            .build("Build", "Compile", "echo built")
            .build("Deploy", "Publish", "echo published"),
    );
    let id = controller.start_pipeline("mobile-shop");
    assert_eq!(
        controller.wait_finished(&id, Duration::from_secs(60))["status"],
        "Succeeded"
    );
    let browser = Browser::open(&controller.url);
    // Sign in with the keyboard only: the password field has the focus, Enter submits.
    browser.goto("/");
    browser.wait_present("[data-test=signin-form]");
    browser.block(async |c| {
        let focused = c.active_element().await.unwrap();
        assert_eq!(
            focused.attr("name").await.unwrap().as_deref(),
            Some("password")
        );
        focused
            .send_keys(&format!("{PASSWORD}\u{E007}"))
            .await
            .unwrap();
    });
    browser.wait_text("[data-test=user]", "admin", |t| t == "admin");
    // Tab reaches the pipeline's link; Enter opens it.
    let reached = browser.block(async |c| {
        for _ in 0..40 {
            let focused = c.active_element().await.unwrap();
            if focused.text().await.unwrap_or_default() == "mobile-shop" {
                focused.send_keys("\u{E007}").await.unwrap();
                return true;
            }
            focused.send_keys("\u{E004}").await.unwrap();
        }
        false
    });
    assert!(reached, "Tab never reached the pipeline's link");
    browser.wait_contains(&stage_status("Deploy"), "Succeeded");
    assert!(
        browser.route().starts_with("/pipelines/mobile-shop"),
        "{}",
        browser.route()
    );

    // At phone width nothing sticks out sideways, on the overview and the pipeline.
    browser.resize_viewport(390, 844);
    for path in [
        "/#/",
        "/#/pipelines/mobile-shop",
        &format!("/#/executions/{id}"),
    ] {
        browser.goto(path);
        browser.wait_present("main .page");
        std::thread::sleep(Duration::from_millis(300));
        let overflow = browser.script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth",
        );
        // What sticks out, to say so if anything does.
        let culprits = browser.script(
            "const w = document.documentElement.clientWidth;
             return [...document.querySelectorAll('body *')]
               .filter((e) => e.getBoundingClientRect().right > w + 1)
               .filter((e) => !e.parentElement || e.parentElement.getBoundingClientRect().right <= w + 1)
               .slice(0, 5)
               .map((e) => `${e.tagName}.${e.className} (${Math.round(e.getBoundingClientRect().right)} px)`);",
        );
        assert!(
            overflow.as_i64().unwrap() <= 0,
            "{path} overflows by {overflow} px at 390 px: {culprits}"
        );
    }
    browser.goto("/#/pipelines/mobile-shop");
    browser.wait_contains(&stage_status("Deploy"), "Succeeded");
    browser.screenshot("phone.png");

    // Light and dark (the system's setting) both keep text readable: WCAG contrast of
    // at least 4.5:1 for body text, muted text, links and the status badges.
    browser.resize_viewport(WIDTH, HEIGHT);
    for scheme in ["light", "dark"] {
        browser.cdp(
            "Emulation.setEmulatedMedia",
            json!({ "features": [{ "name": "prefers-color-scheme", "value": scheme }] }),
        );
        browser.goto(&format!("/#/executions/{id}"));
        browser.wait_contains(".page-head .status", "Succeeded");
        let report = browser.script(CONTRAST_REPORT);
        let background = report["background"].as_f64().unwrap();
        if scheme == "dark" {
            assert!(background < 0.05, "dark page background: {report}");
        } else {
            assert!(background > 0.8, "light page background: {report}");
        }
        for checked in report["checked"].as_array().unwrap() {
            assert!(
                checked["ratio"].as_f64().unwrap() >= 4.5,
                "{scheme}: {checked} is hard to read"
            );
        }
        assert!(
            report["checked"].as_array().unwrap().len() >= 4,
            "{scheme}: {report}"
        );
        if scheme == "dark" {
            browser.screenshot("dark.png");
        }
    }
}

/// Measures, in the page, the relative luminance of the page background and the
/// contrast ratio (WCAG 2) of a sample of text against the background it sits on.
const CONTRAST_REPORT: &str = r#"
const rgb = (c) => (c.match(/[\d.]+/g) || []).map(Number);
const luminance = ([r, g, b]) => {
  const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
  return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
};
const backgroundOf = (el) => {
  for (let e = el; e; e = e.parentElement) {
    const c = rgb(getComputedStyle(e).backgroundColor);
    if (c.length === 3 || (c.length === 4 && c[3] > 0.5)) return c.slice(0, 3);
  }
  return rgb(getComputedStyle(document.documentElement).backgroundColor).slice(0, 3);
};
const ratio = (el) => {
  const a = luminance(rgb(getComputedStyle(el).color)), b = luminance(backgroundOf(el));
  return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
};
const samples = { 'body text': 'main h2, main h1', 'muted text': '.muted', link: 'main a',
  'status badge': '.page-head .status', 'navigation': 'header.top nav a', 'user name': '[data-test=user]' };
const checked = [];
for (const [what, css] of Object.entries(samples)) {
  const el = document.querySelector(css);
  if (el) checked.push({ what, css, ratio: Math.round(ratio(el) * 100) / 100 });
}
return { background: luminance(backgroundOf(document.body)), checked };
"#;
