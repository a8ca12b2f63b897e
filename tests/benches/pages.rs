//! Web UI page loads: how long does each page of the UI take, in a real headless
//! Chromium, from the start of the navigation to its data being on the page?
//!
//! Real `sluice` and `sluice-agent` processes (the ones the e2e tests use, found by
//! `sluice_e2e::bin_dir`): this benchmark builds nothing, so build them first with the
//! same profile, `cargo build --workspace --release` (a benchmark runs in the release
//! profile and so uses `target/release/`; see tests/src/lib.rs). Without them it stops
//! and says so.
//!
//! Set-up: a controller (real TLS) with one agent (capacity 4); 200 pipelines created
//! through the HTTPS API with the client config's token, each a `directory` source and
//! one or two `commands` stages; `app-000` is run 60 times (its history page has a full
//! page of 50 rows and a chart of 50 bars), 8 others once (3 of them fail), and
//! `wide-20` (3 stages, 20 actions) once.
//!
//! Then chromedriver starts headless Chromium (the flags of tests/browser.rs), the
//! benchmark signs in once through the form, and for each page loads it 2 times
//! unmeasured and 20 times measured. Every load is a full document load: the browser
//! first opens `/ui/icon.svg` (same origin, no script) and then the page's URL, so the
//! shell, its modules (revalidated: `Cache-Control: no-cache` with ETags) and the API
//! calls are all part of it. A script registered through the DevTools protocol
//! (`Page.addScriptToEvaluateOnNewDocument`) watches each new document with a
//! `MutationObserver` and notes `performance.now()` (milliseconds since
//! `performance.timeOrigin`, the navigation start) the moment the page's data is in
//! the DOM:
//!
//! - overview: "200 of 200 pipelines" and 200 rows;
//! - pipeline view (`wide-20`): 3 stage columns all "Succeeded", 20 action cards and
//!   the execution bar "Succeeded";
//! - execution detail (`wide-20`'s execution): the timeline's 23 rows (3 stages, 20
//!   actions) with 20 "Succeeded" attempt bars;
//! - history (`app-000`): 50 rows and 50 chart bars;
//!
//! and the start of the next frame after it. Resource timing splits each load into the
//! document, the modules and style sheet, and the API calls. Also measured: a cold
//! load of the overview (`Network.clearBrowserCache` first, 3 times), its bytes
//! (`transferSize` and `encodedBodySize` of the document and every resource) and
//! number of requests.
//!
//! Last, a 52 MB log: a `verbose` pipeline prints 720,000 coloured lines, and its
//! attempt's log is opened 3 times in the execution page (each a full load), noting
//! when its first lines show, when the whole log is loaded and indexed, how long a
//! search for its last line takes, and the main thread's long tasks (the Long Tasks
//! API: tasks over 50 ms) over all of it: the page must never freeze.
//!
//! Run with `cargo bench -p sluice-e2e --bench pages`. Needs Debian's `chromium` and
//! `chromium-driver` (/usr/bin/chromium, /usr/bin/chromedriver).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use fantoccini::{Client, Locator};
use serde_json::{Value, json};
use sluice_e2e::{BIG_LOG_STAGE, Controller, chromium, start_with_agent};

const PASSWORD: &str = "page-bench-password";
const PIPELINES: usize = 200;
/// The pipeline with a 20-action execution (one of the 200).
const WIDE: &str = "wide-20";
/// The pipeline with a full history page.
const HISTORY: &str = "app-000";
const HISTORY_RUNS: usize = 60;
/// Pipelines run once (besides the two above), and which of them fail.
const RUN_ONCE: &[usize] = &[3, 17, 42, 77, 101, 133, 160, 188];
const FAILING: &[usize] = &[17, 101, 160];
const WARM_UP: usize = 2;
const MEASURED: usize = 20;
const COLD: usize = 3;
/// How long any one wait may take.
const TIMEOUT: Duration = Duration::from_secs(30);

fn main() -> Result<()> {
    check_prerequisites()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run())
}

/// Chromium, chromedriver and the built binaries must be there: say what to do if not.
fn check_prerequisites() -> Result<()> {
    chromium::check_installed()?;
    // sluice_e2e::bin_dir would build missing binaries with a nested cargo; this
    // benchmark builds nothing, so look first.
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("no workspace")?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let flag = if cfg!(debug_assertions) {
        ""
    } else {
        " --release"
    };
    for bin in ["sluice", "sluice-agent"] {
        let path = target.join(profile).join(bin);
        let meta = std::fs::metadata(&path).map_err(|e| {
            anyhow::anyhow!(
                "{}: {e}; build the binaries first: cargo build --workspace{flag}",
                path.display()
            )
        })?;
        let age = meta.modified()?.elapsed().unwrap_or_default();
        println!("using {} (built {} s ago)", path.display(), age.as_secs());
    }
    Ok(())
}

async fn run() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let setting_up = Instant::now();
    let (controller, _agent) = tokio::task::block_in_place(|| {
        start_with_agent(dir.path(), &["--admin-password", PASSWORD], 4)
    });
    let api = Api::new(&controller)?;
    let (wide_execution, stages, actions) = populate(&api, dir.path()).await?;
    println!(
        "set-up: {PIPELINES} pipelines, executions run, in {:.1} s",
        setting_up.elapsed().as_secs_f64()
    );

    let browser = Browser::open(&controller.url).await?;
    browser.sign_in().await?;
    let want = json!({
        "pipelines": PIPELINES,
        "stages": stages,
        "actions": actions,
        "historyRows": 50,
    });
    browser
        .cdp(
            "Page.addScriptToEvaluateOnNewDocument",
            json!({ "source": WATCHER.replace("WANT", &want.to_string()) }),
        )
        .await?;

    // Cold loads of the overview: nothing in the HTTP cache.
    let mut cold = Vec::new();
    for _ in 0..COLD {
        browser.cdp("Network.clearBrowserCache", json!({})).await?;
        cold.push(browser.load("/#/", "overview").await?);
    }

    let pages = [
        ("overview (200 pipelines)", "/#/".to_string(), "overview"),
        (
            "pipeline view (wide-20)",
            format!("/#/pipelines/{WIDE}"),
            "pipeline",
        ),
        (
            "execution detail (20 actions)",
            format!("/#/executions/{wide_execution}"),
            "execution",
        ),
        (
            "history (app-000, 50 rows)",
            format!("/#/pipelines/{HISTORY}/history"),
            "history",
        ),
    ];
    let mut results = Vec::new();
    for (title, path, page) in &pages {
        let mut loads = Vec::new();
        let mut origin = 0.0;
        for i in 0..WARM_UP + MEASURED {
            let load = browser.load(path, page).await?;
            ensure!(
                load.time_origin > origin,
                "{title}: the page was not a new document"
            );
            origin = load.time_origin;
            if i >= WARM_UP {
                loads.push(load);
            }
        }
        results.push((*title, loads));
    }
    print_results(&results, &cold);

    let big_log = measure_big_log(&api, &browser, dir.path()).await?;
    browser.close().await;
    print_big_log(&big_log);
    drop(controller);
    Ok(())
}

/// How many times the 50 MB log is opened.
const BIG_LOG_LOADS: usize = 3;
/// Its last printed line, searched for.
const BIG_LOG_LAST: &str = "line 719999 ";

/// One opening of the 50 MB log, in milliseconds since navigation start.
#[derive(Debug)]
struct LogLoad {
    first_line: f64,
    complete: f64,
    /// From typing the query to the search being done (includes the 200 ms debounce).
    search: f64,
    longest_task: f64,
    long_tasks: u64,
    long_task_total: f64,
}

/// Runs a pipeline whose action prints a 52 MB log (720,000 coloured lines), then opens
/// its log in the execution page [`BIG_LOG_LOADS`] times: when the first lines show,
/// when the whole log is loaded and indexed, how long a search for the last line takes,
/// and the main thread's long tasks (over 50 ms, the Long Tasks API) over all of it.
async fn measure_big_log(api: &Api, browser: &Browser, dir: &Path) -> Result<Vec<LogLoad>> {
    let source = dir.join("src");
    api.create(format!(
        "name: verbose\nstages:\n  - name: Source\n    actions:\n      - name: Snapshot\n        actionTypeId: {{category: Source, provider: directory}}\n        configuration: {{Path: {}}}\n        outputArtifacts: [Code]\n\
         {BIG_LOG_STAGE}",
        source.display()
    ))
    .await?;
    let started = Instant::now();
    let id = api.start("verbose").await?;
    let status = api.wait_finished(&id).await?;
    ensure!(status == "Succeeded", "verbose: {status}");
    let execution = api.execution(&id).await?;
    let attempt = &execution["stages"][1]["actions"][0]["attempts"][0];
    let stored = attempt["log"]["storedLength"].as_u64().unwrap_or_default();
    ensure!(stored > 50 << 20, "the big log is only {stored} bytes");
    println!(
        "\nbig log: {:.1} MB produced, sent and stored in {:.1} s",
        stored as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    browser
        .cdp(
            "Page.addScriptToEvaluateOnNewDocument",
            json!({ "source": LOG_WATCHER }),
        )
        .await?;
    browser
        .client
        .update_timeouts(fantoccini::wd::TimeoutConfiguration::new(
            Some(Duration::from_secs(300)),
            Some(Duration::from_secs(60)),
            Some(Duration::from_secs(0)),
        ))
        .await?;
    let path = format!("/#/executions/{id}?attempt={}", attempt["id"]);
    let mut loads = Vec::new();
    for _ in 0..BIG_LOG_LOADS {
        browser.goto("/ui/icon.svg").await?;
        browser.goto(&path).await?;
        let v = browser
            .client
            .execute_async(LOG_COLLECT, vec![json!(BIG_LOG_LAST)])
            .await
            .context("waiting for the big log")?;
        if let Some(error) = v.get("error").and_then(Value::as_str) {
            bail!("big log: {error}");
        }
        let number = |key: &str| {
            v[key]
                .as_f64()
                .with_context(|| format!("big log: no {key} in {v}"))
        };
        loads.push(LogLoad {
            first_line: number("firstLine")?,
            complete: number("complete")?,
            search: number("search")?,
            longest_task: number("longestTask")?,
            long_tasks: number("longTasks")? as u64,
            long_task_total: number("longTaskTotal")?,
        });
    }
    Ok(loads)
}

/// Notes, in a new document showing an attempt's log, when its first line is shown and
/// when it is complete, and collects the long tasks.
const LOG_WATCHER: &str = r#"(() => {
  if (location.pathname !== '/' || !location.hash.includes('attempt=')) return;
  const state = { firstLine: null, complete: null, longTasks: [] };
  window.__logBench = state;
  try {
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) state.longTasks.push(e.duration);
    }).observe({ type: 'longtask', buffered: true });
  } catch (e) {
    state.error = `no Long Tasks API: ${e}`;
  }
  const observer = new MutationObserver(() => {
    if (state.firstLine === null && document.querySelector('[data-test=log-line]')) state.firstLine = performance.now();
    if (state.complete === null && document.querySelector('[data-test=log-view][data-log-state=complete]')) {
      state.complete = performance.now();
      observer.disconnect();
    }
  });
  observer.observe(document, { childList: true, subtree: true, attributes: true });
})();"#;

/// Waits for the log to be complete, searches it for its last line, and returns the
/// timings.
const LOG_COLLECT: &str = r#"const [needle, callback] = arguments;
const wait = (ok, then) => { const tick = () => (ok() ? then() : setTimeout(tick, 10)); tick(); };
const state = window.__logBench;
if (!state) return callback({ error: `no log watcher on ${location.href}` });
if (state.error) return callback({ error: state.error });
wait(() => state.complete !== null, () => {
  const input = document.querySelector('[data-test=log-search]');
  const searchStart = performance.now();
  input.value = needle;
  input.dispatchEvent(new Event('input', { bubbles: true }));
  wait(() => {
    const text = document.querySelector('[data-test=log-search-count]')?.textContent || '';
    return text.includes('match') && !text.includes('+');
  }, () => {
    const search = performance.now() - searchStart;
    const count = document.querySelector('[data-test=log-search-count]').textContent;
    if (!/^1 match/.test(count)) return callback({ error: `searching ${needle}: ${count}` });
    // Long tasks are reported after they end: let the last one in.
    setTimeout(() => callback({
      firstLine: state.firstLine,
      complete: state.complete,
      search,
      longestTask: Math.max(0, ...state.longTasks),
      longTasks: state.longTasks.length,
      longTaskTotal: state.longTasks.reduce((a, b) => a + b, 0),
    }), 100);
  });
});"#;

fn print_big_log(loads: &[LogLoad]) {
    println!(
        "50 MB log (720,005 lines) opened {} times, ms since navigation start:",
        loads.len()
    );
    println!(
        "{:>6} {:>12} {:>14} {:>12} {:>14} {:>11} {:>16}",
        "load",
        "first lines",
        "all indexed",
        "search end",
        "longest task",
        "long tasks",
        "long tasks total"
    );
    for (i, l) in loads.iter().enumerate() {
        println!(
            "{:>6} {:>12.0} {:>14.0} {:>12.0} {:>14.0} {:>11} {:>16.0}",
            i + 1,
            l.first_line,
            l.complete,
            l.search,
            l.longest_task,
            l.long_tasks,
            l.long_task_total
        );
    }
}

/// The page watcher, run in every new document before its scripts. `WANT` is replaced
/// with what the pages must show. It notes when the page's data is in the DOM
/// (`done`) and the start of the next frame (`frame`), then calls `notify` if the
/// benchmark is already waiting.
const WATCHER: &str = r#"(() => {
  if (location.pathname !== '/') return;
  const want = WANT;
  const count = (css) => document.querySelectorAll(css).length;
  const text = (css) => document.querySelector(css)?.textContent || '';
  const parts = decodeURIComponent(location.hash.replace(/^#\/?/, '')).split('?')[0].split('/').filter(Boolean);
  let page, ready;
  if (parts.length === 0) {
    page = 'overview';
    ready = () => count('.pipeline-row') === want.pipelines &&
      text('main .count').includes(`${want.pipelines} of ${want.pipelines} pipelines`);
  } else if (parts[0] === 'pipelines' && parts[2] === 'history') {
    page = 'history';
    ready = () => count('[data-test=history-row]') === want.historyRows &&
      count('[data-test=chart-bar]') === want.historyRows;
  } else if (parts[0] === 'pipelines') {
    page = 'pipeline';
    ready = () => {
      const stages = [...document.querySelectorAll('section.stage > header .status')];
      return stages.length === want.stages && stages.every((s) => s.textContent.includes('Succeeded')) &&
        count('.action-card') === want.actions &&
        text('[data-test=execution-bar] > .status').includes('Succeeded');
    };
  } else if (parts[0] === 'executions') {
    page = 'execution';
    ready = () => count('[data-test=timeline-row]') === want.stages + want.actions &&
      count('[data-test=timeline-attempt][data-status=Succeeded]') === want.actions;
  } else {
    return;
  }
  const state = { page, done: null, frame: null, notify: null };
  window.__pageBench = state;
  const observer = new MutationObserver(() => {
    if (state.done !== null || !ready()) return;
    state.done = performance.now();
    observer.disconnect();
    requestAnimationFrame(() => setTimeout(() => {
      state.frame = performance.now();
      if (state.notify) state.notify();
    }));
  });
  observer.observe(document, { childList: true, subtree: true, characterData: true, attributes: true });
})();"#;

/// Run in the page once the watcher has seen the data: waits for it if need be, then
/// returns the timings and the resource timing totals.
const COLLECT: &str = r#"const [page, callback] = arguments;
const state = window.__pageBench;
if (!state) return callback({ error: `no watcher on ${location.href}` });
if (state.page !== page) return callback({ error: `watcher for ${state.page}, not ${page}` });
const collect = () => {
  const nav = performance.getEntriesByType('navigation')[0];
  const resources = performance.getEntriesByType('resource');
  const isApi = (r) => new URL(r.name).pathname.startsWith('/api/');
  const before = resources.filter((r) => r.startTime < state.done);
  const api = before.filter(isApi);
  const assets = before.filter((r) => !isApi(r));
  const sum = (key) => nav[key] + resources.reduce((n, r) => n + r[key], 0);
  callback({
    timeOrigin: performance.timeOrigin,
    done: state.done,
    frame: state.frame,
    document: nav.responseEnd,
    assets: Math.max(nav.responseEnd, ...assets.map((r) => r.responseEnd)),
    apiStart: Math.min(...api.map((r) => r.startTime)),
    apiEnd: Math.max(0, ...api.map((r) => r.responseEnd)),
    apiCalls: api.map((r) => new URL(r.name).pathname),
    requests: 1 + resources.length,
    transferSize: sum('transferSize'),
    encodedBodySize: sum('encodedBodySize'),
    decodedBodySize: sum('decodedBodySize'),
    protocol: nav.nextHopProtocol,
  });
};
if (state.frame !== null) collect();
else state.notify = collect;"#;

/// One page load, in milliseconds since its navigation start.
#[derive(Debug, Clone)]
struct Load {
    time_origin: f64,
    /// The page's data in the DOM.
    done: f64,
    /// The next frame after that.
    frame: f64,
    /// The document received.
    document: f64,
    /// The last module, style sheet or image received (before `done`).
    assets: f64,
    /// The first API call started, and the last API response received (before `done`).
    api_start: f64,
    api_end: f64,
    api_calls: Vec<String>,
    requests: u64,
    transfer_size: u64,
    encoded_body_size: u64,
    decoded_body_size: u64,
    protocol: String,
}

impl Load {
    fn from_json(v: &Value) -> Result<Load> {
        if let Some(error) = v["error"].as_str() {
            bail!("{error}");
        }
        let f = |key: &str| {
            v[key]
                .as_f64()
                .with_context(|| format!("{key} missing in {v}"))
        };
        Ok(Load {
            time_origin: f("timeOrigin")?,
            done: f("done")?,
            frame: f("frame")?,
            document: f("document")?,
            assets: f("assets")?,
            api_start: f("apiStart")?,
            api_end: f("apiEnd")?,
            api_calls: v["apiCalls"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c.as_str().map(str::to_string))
                .collect(),
            requests: f("requests")? as u64,
            transfer_size: f("transferSize")? as u64,
            encoded_body_size: f("encodedBodySize")? as u64,
            decoded_body_size: f("decodedBodySize")? as u64,
            protocol: v["protocol"].as_str().unwrap_or_default().to_string(),
        })
    }
}

/// The controller's API, with the CLI's token.
struct Api {
    client: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    fn new(controller: &Controller) -> Result<Api> {
        let config = std::fs::read_to_string(&controller.config)?;
        let token = config
            .lines()
            .find_map(|l| l.strip_prefix("token = "))
            .context("no token in the client config")?
            .trim_matches('"')
            .to_string();
        Ok(Api {
            client: controller.https_client(),
            base: controller.url.clone(),
            token,
        })
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Body) -> Result<Value> {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        request = match body {
            Body::None => request,
            Body::Json(v) => request.json(&v),
            Body::Text(t) => request.body(t),
        };
        let response = request.send().await?;
        let status = response.status();
        let text = response.text().await?;
        ensure!(status.is_success(), "{path}: {status}: {text}");
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn create(&self, yaml: String) -> Result<()> {
        self.call(
            reqwest::Method::POST,
            "/api/v1/pipelines?format=yaml",
            Body::Text(yaml),
        )
        .await
        .map(drop)
    }

    async fn start(&self, name: &str) -> Result<String> {
        let started = self
            .call(
                reqwest::Method::POST,
                &format!("/api/v1/pipelines/{name}/executions"),
                Body::Json(json!({"variables": [], "sourceRevisions": []})),
            )
            .await?;
        Ok(started["id"]
            .as_str()
            .with_context(|| format!("no execution id in {started}"))?
            .to_string())
    }

    async fn execution(&self, id: &str) -> Result<Value> {
        self.call(
            reqwest::Method::GET,
            &format!("/api/v1/executions/{id}"),
            Body::None,
        )
        .await
    }

    async fn wait_finished(&self, id: &str) -> Result<String> {
        let start = Instant::now();
        loop {
            let e = self.execution(id).await?;
            let status = e["status"].as_str().unwrap_or_default();
            if !["InProgress", "Stopping"].contains(&status) {
                return Ok(status.to_string());
            }
            // Generous: a fresh agent first compiles its plugins, and the machine may be busy.
            ensure!(
                start.elapsed() < 6 * TIMEOUT,
                "execution {id} did not finish: {e}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

enum Body {
    None,
    Json(Value),
    Text(String),
}

/// A stage of `n` `commands` actions (run in parallel), each taking the source.
fn commands_stage(stage: &str, n: usize, commands: &str) -> String {
    let mut yaml = format!("  - name: {stage}\n    actions:\n");
    for i in 1..=n {
        let action = if n == 1 {
            stage.to_string()
        } else {
            format!("{stage}-{i:02}")
        };
        yaml.push_str(&format!(
            "      - name: {action}\n        actionTypeId: {{category: Build, provider: commands}}\n        configuration: {{Commands: \"{commands}\"}}\n        inputArtifacts: [Code]\n"
        ));
    }
    yaml
}

/// Creates the 200 pipelines and runs the executions; returns the wide pipeline's
/// execution id and its number of stages and actions.
async fn populate(api: &Api, dir: &Path) -> Result<(String, usize, usize)> {
    let source = dir.join("src");
    std::fs::create_dir_all(&source)?;
    std::fs::write(source.join("index.html"), "<h1>hello</h1>\n")?;
    let head = |name: &str| {
        format!(
            "name: {name}\nstages:\n  - name: Source\n    actions:\n      - name: Snapshot\n        actionTypeId: {{category: Source, provider: directory}}\n        configuration: {{Path: {}}}\n        outputArtifacts: [Code]\n",
            source.display()
        )
    };
    for i in 0..PIPELINES - 1 {
        let name = format!("app-{i:03}");
        let build = if FAILING.contains(&i) {
            "echo 1 test failed; exit 1"
        } else {
            "echo built"
        };
        let mut yaml = head(&name) + &commands_stage("Build", 1, build);
        // Two thirds have a third stage.
        if i % 3 != 2 {
            yaml += &commands_stage("Deploy", 1, "echo deployed");
        }
        api.create(yaml).await?;
    }
    // 1 + 10 + 9 = 20 actions in 3 stages.
    let (stages, actions) = (3, 20);
    api.create(
        head(WIDE)
            + &commands_stage("Build", 10, "echo built")
            + &commands_stage("Test", 9, "echo tested"),
    )
    .await?;

    let mut once = Vec::new();
    for &i in RUN_ONCE {
        let name = format!("app-{i:03}");
        once.push((i, api.start(&name).await?));
    }
    let wide = api.start(WIDE).await?;
    for (i, id) in &once {
        let status = api.wait_finished(id).await?;
        let expected = if FAILING.contains(i) {
            "Failed"
        } else {
            "Succeeded"
        };
        ensure!(status == expected, "app-{i:03}: {status}, not {expected}");
    }
    let status = api.wait_finished(&wide).await?;
    ensure!(status == "Succeeded", "{WIDE}: {status}");
    for _ in 0..HISTORY_RUNS {
        let id = api.start(HISTORY).await?;
        let status = api.wait_finished(&id).await?;
        ensure!(status == "Succeeded", "{HISTORY}: {status}");
    }
    Ok((wide, stages, actions))
}

/// A WebDriver session in a fresh headless Chromium (the one tests/browser.rs uses),
/// at `base` (the controller's URL).
struct Browser {
    session: chromium::Session,
    client: Client,
    base: String,
}

impl Browser {
    async fn open(base: &str) -> Result<Browser> {
        let session = chromium::Session::open(1280, 800).await?;
        Ok(Browser {
            client: session.client.clone(),
            session,
            base: base.to_string(),
        })
    }

    async fn cdp(&self, cmd: &'static str, params: Value) -> Result<Value> {
        self.session.cdp(cmd, params).await
    }

    async fn goto(&self, path: &str) -> Result<()> {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .with_context(|| format!("opening {path}"))
    }

    /// Polls until `check` returns Some.
    async fn poll<T>(
        &self,
        what: &str,
        mut check: impl AsyncFnMut(&Client) -> Option<T>,
    ) -> Result<T> {
        let start = Instant::now();
        loop {
            if let Some(value) = check(&self.client).await {
                return Ok(value);
            }
            ensure!(start.elapsed() < TIMEOUT, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Signs in as admin through the form.
    async fn sign_in(&self) -> Result<()> {
        self.goto("/").await?;
        let password = self
            .poll("the sign-in form", async |c| {
                c.find(Locator::Css("[data-test=signin-form] input[name=password]"))
                    .await
                    .ok()
            })
            .await?;
        password.send_keys(PASSWORD).await?;
        self.client
            .find(Locator::Css("[data-test=signin-form] button[type=submit]"))
            .await?
            .click()
            .await?;
        self.poll("the signed-in shell", async |c| {
            let user = c.find(Locator::Css("[data-test=user]")).await.ok()?;
            (user.text().await.ok()? == "admin").then_some(())
        })
        .await
    }

    /// One full load of `path`: from another document of the same origin, so the
    /// navigation loads the UI's page anew; waits for the watcher's timings.
    async fn load(&self, path: &str, page: &str) -> Result<Load> {
        self.goto("/ui/icon.svg").await?;
        self.goto(path).await?;
        let value = self
            .client
            .execute_async(COLLECT, vec![json!(page)])
            .await
            .with_context(|| format!("waiting for {page} ({path}) to show its data"))?;
        Load::from_json(&value).with_context(|| format!("{page} ({path})"))
    }

    async fn close(self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), self.client.close()).await;
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Median of sorted values (mean of the two middle ones for an even count).
fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n.is_multiple_of(2) {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    } else {
        sorted[n / 2]
    }
}

fn sorted(loads: &[Load], f: impl Fn(&Load) -> f64) -> Vec<f64> {
    let mut v: Vec<f64> = loads.iter().map(f).collect();
    v.sort_by(f64::total_cmp);
    v
}

fn kib(bytes: u64) -> String {
    format!("{:.1} KiB", bytes as f64 / 1024.0)
}

fn print_results(results: &[(&str, Vec<Load>)], cold: &[Load]) {
    println!();
    println!(
        "Navigation start to the page's data in the DOM ({MEASURED} loads after {WARM_UP} warm-up, ms):"
    );
    println!(
        "{:<32} {:>8} {:>8} {:>8} {:>8} {:>14}",
        "page", "median", "p90", "min", "max", "next frame med"
    );
    for (title, loads) in results {
        let done = sorted(loads, |l| l.done);
        let frame = sorted(loads, |l| l.frame);
        println!(
            "{title:<32} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>14.1}",
            median(&done),
            percentile(&done, 90.0),
            done[0],
            done[done.len() - 1],
            median(&frame),
        );
    }

    println!();
    println!("Where the time goes (medians, ms since navigation start):");
    println!(
        "{:<32} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}  API calls",
        "page", "document", "assets", "API from", "API to", "in DOM", "render"
    );
    for (title, loads) in results {
        let m = |f: fn(&Load) -> f64| median(&sorted(loads, f));
        let calls = loads
            .last()
            .map(|l| l.api_calls.join(" "))
            .unwrap_or_default();
        println!(
            "{title:<32} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1}  {calls}",
            m(|l| l.document),
            m(|l| l.assets),
            m(|l| l.api_start),
            m(|l| l.api_end),
            m(|l| l.done),
            m(|l| l.done - l.api_end),
        );
    }

    println!();
    println!("Bytes per load (document + every resource, resource timing):");
    for (title, loads) in results {
        if let Some(l) = loads.last() {
            println!(
                "{title:<32} warm: {:>3} requests, {:>10} transferred, {:>10} encoded bodies ({})",
                l.requests,
                kib(l.transfer_size),
                kib(l.encoded_body_size),
                l.protocol,
            );
        }
    }
    if let Some(first) = cold.first() {
        let done = sorted(cold, |l| l.done);
        println!(
            "cold overview load (cache cleared): {} requests, {} transferred ({} B), {} encoded bodies, {} decoded; \
             in DOM after {:.1} ms median of {} (min {:.1}, max {:.1})",
            first.requests,
            kib(first.transfer_size),
            first.transfer_size,
            kib(first.encoded_body_size),
            kib(first.decoded_body_size),
            median(&done),
            cold.len(),
            done[0],
            done[done.len() - 1],
        );
        for (i, l) in cold.iter().enumerate().skip(1) {
            if l.requests != first.requests || l.transfer_size != first.transfer_size {
                println!(
                    "  cold load {}: {} requests, {} B transferred",
                    i + 1,
                    l.requests,
                    l.transfer_size
                );
            }
        }
    }
}
