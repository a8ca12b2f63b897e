//! Plugin start-up and call overhead: what compiling, loading and running a WASM plugin
//! costs the agent, measured through the plugin host's public API.
//!
//! - **cold compile**: `PluginHost::compile` of a component with an empty cache dir
//!   (Cranelift + writing the `.cwasm` + mmapping it + pre-linking). What an agent pays
//!   the first time it sees a plugin. A fresh host over a fresh temp dir per iteration.
//! - **cached load**: the same call when the `.cwasm` is already in the cache dir (sha256
//!   of the wasm, mmap, pre-link), and a whole agent restart (`PluginHost::new` +
//!   `load_builtins` over a warm cache dir).
//! - **warm run**: `PluginHost::run` of an already loaded plugin: a fresh store and
//!   instance from the pre-linked `InstancePre`, the call, the drop. This is the
//!   per-action overhead. The test-only `test-probe` plugin with `Mode=noop` does no work;
//!   runs rejected before the store exists (wrong category, invalid configuration) show
//!   what the host spends before instantiating.
//! - **real work**: `build-commands` with `Commands=true` (one `sh -e -c true` through the
//!   `exec` host call), the probe exec'ing `sh -c true`, and the same `sh` spawned
//!   natively the way the host spawns it, to split process spawn from WASM.
//!
//! Every run's outcome is checked; anything unexpected ends the benchmark with an error
//! (non-zero exit). Run with `cargo bench -p sluice-agent --bench plugin_start`.
//! `SLUICE_LOG=info` prints the host's log to stderr (it then costs its share).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};
use sluice_agent::builtin::{self, BuiltinPlugin};
use sluice_agent::plugin_host::{
    LoadSource, LoadedPlugin, Manifest, PluginHost, RunOutcome, RunRequest,
};
use tokio::sync::mpsc;

/// Cold compiles take 50–500 ms each: enough for a stable median in a few seconds.
const COLD_RUNS: usize = 20;
/// Cached loads and restarts are sub-millisecond to a few ms.
const CACHED_RUNS: usize = 200;
const RESTART_RUNS: usize = 30;
/// Warm runs without a child process are tens of µs: many, after a warm-up that fills
/// the pooling allocator's slots and the CPU caches.
const WARM_RUNS: usize = 5000;
const WARM_UP: usize = 200;
/// Runs that spawn a process take milliseconds.
const SPAWN_RUNS: usize = 300;
const SPAWN_WARM_UP: usize = 20;

/// The built-in used as the "small plugin" throughout.
const SMALL: &str = "build-commands";

fn main() -> anyhow::Result<()> {
    if let Ok(filter) = std::env::var("SLUICE_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot build the tokio runtime")?;
    runtime.block_on(bench())
}

#[derive(Clone, Copy)]
enum Unit {
    Ms,
    Us,
}

/// One measured line of the table: sorted samples.
struct Row {
    what: String,
    unit: Unit,
    samples: Vec<Duration>,
}

impl Row {
    fn new(what: impl Into<String>, unit: Unit, mut samples: Vec<Duration>) -> Row {
        samples.sort_unstable();
        Row {
            what: what.into(),
            unit,
            samples,
        }
    }

    fn median(&self) -> Duration {
        median(&self.samples)
    }
}

async fn bench() -> anyhow::Result<()> {
    let load_before = loadavg();
    let all = builtin::all();
    let small = all
        .iter()
        .find(|b| b.id == SMALL)
        .with_context(|| format!("no built-in plugin {SMALL}"))?;
    let largest = all
        .iter()
        .max_by_key(|b| b.wasm.len())
        .context("no built-in plugins")?;
    println!("plugin_start: {} built-in plugins", all.len());
    for b in all {
        println!("  {:<18} {:>9} B wasm", b.id, b.wasm.len());
    }
    println!("small: {SMALL}, largest: {}", largest.id);
    println!(
        "cpus: {}, load average before: {load_before}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    let mut rows = Vec::new();

    // A cache dir that every later section finds warm.
    let warm_cache = tempfile::tempdir().context("cannot create a temp dir")?;
    {
        let mut host = PluginHost::new(warm_cache.path())?;
        host.load_builtins()?;
        println!(
            "pooling allocator: {}",
            if host.uses_pooling_allocator() {
                "yes"
            } else {
                "no (on-demand)"
            }
        );
    }

    // Engine + linker + HTTP client (root certificates): paid once per agent start.
    let mut samples = Vec::with_capacity(RESTART_RUNS);
    for _ in 0..RESTART_RUNS {
        let started = Instant::now();
        let host = PluginHost::new(warm_cache.path())?;
        samples.push(started.elapsed());
        drop(host);
    }
    rows.push(Row::new(
        "PluginHost::new (engine, linker, HTTP client)",
        Unit::Ms,
        samples,
    ));

    for plugin in [small, largest] {
        rows.push(cold_compile(plugin)?);
    }
    for plugin in [small, largest] {
        rows.extend(cached_load(warm_cache.path(), plugin)?);
    }

    // What an agent restart pays for its plugins: everything from the warm cache.
    let mut samples = Vec::with_capacity(RESTART_RUNS);
    for _ in 0..RESTART_RUNS {
        let started = Instant::now();
        let mut host = PluginHost::new(warm_cache.path())?;
        host.load_builtins()?;
        samples.push(started.elapsed());
        if let Some(p) = host
            .plugins()
            .iter()
            .find(|p| p.load_source() != LoadSource::Cached)
        {
            bail!(
                "restart: {} was compiled, not loaded from the warm cache",
                p.manifest.id
            );
        }
    }
    rows.push(Row::new(
        format!(
            "restart: PluginHost::new + load_builtins ({} cached)",
            all.len()
        ),
        Unit::Ms,
        samples,
    ));

    rows.extend(warm_runs(warm_cache.path()).await?);

    let load_after = loadavg();
    print_table(&rows);
    println!("load average before: {load_before}; after: {load_after}");
    Ok(())
}

/// `PluginHost::compile` with nothing cached: a fresh host over a fresh, empty cache dir
/// each time, so nothing (not even the engine) is shared with the previous iteration.
fn cold_compile(plugin: &BuiltinPlugin) -> anyhow::Result<Row> {
    let manifest = Manifest::parse(plugin.id, plugin.manifest)?;
    let mut samples = Vec::with_capacity(COLD_RUNS);
    let mut cwasm_size = 0;
    for _ in 0..COLD_RUNS {
        let dir = tempfile::tempdir().context("cannot create a temp dir")?;
        let host = PluginHost::new(dir.path())?;
        let started = Instant::now();
        let loaded = host.compile(manifest.clone(), plugin.wasm)?;
        samples.push(started.elapsed());
        if loaded.load_source() != LoadSource::Compiled {
            bail!("cold compile of {}: it came from the cache", plugin.id);
        }
        cwasm_size = dir_size(dir.path())?;
    }
    Ok(Row::new(
        format!(
            "cold compile: {} ({} KB wasm -> {} KB cwasm)",
            plugin.id,
            plugin.wasm.len() / 1000,
            cwasm_size / 1000
        ),
        Unit::Ms,
        samples,
    ))
}

/// `PluginHost::compile` of a plugin whose `.cwasm` is in the cache, and the sha256 of
/// its wasm alone (part of every cached load: the digest is the cache key).
fn cached_load(cache: &Path, plugin: &BuiltinPlugin) -> anyhow::Result<Vec<Row>> {
    let manifest = Manifest::parse(plugin.id, plugin.manifest)?;
    let host = PluginHost::new(cache)?;
    let mut samples = Vec::with_capacity(CACHED_RUNS);
    for _ in 0..CACHED_RUNS {
        let started = Instant::now();
        let loaded = host.compile(manifest.clone(), plugin.wasm)?;
        samples.push(started.elapsed());
        if loaded.load_source() != LoadSource::Cached {
            bail!("cached load of {}: it was compiled again", plugin.id);
        }
    }
    let mut digests = Vec::with_capacity(CACHED_RUNS);
    for _ in 0..CACHED_RUNS {
        let started = Instant::now();
        std::hint::black_box(Sha256::digest(std::hint::black_box(plugin.wasm)));
        digests.push(started.elapsed());
    }
    Ok(vec![
        Row::new(
            format!("cached load: {} (compile, cache hit)", plugin.id),
            Unit::Us,
            samples,
        ),
        Row::new(
            format!(
                "  of which sha256 of the {} KB wasm",
                plugin.wasm.len() / 1000
            ),
            Unit::Us,
            digests,
        ),
    ])
}

/// What a run is expected to end with.
enum Expect {
    Succeeded,
    /// Failed, with a message containing this.
    Failed(&'static str),
}

/// Per-action overhead of loaded plugins, and where a real action's time goes.
async fn warm_runs(cache: &Path) -> anyhow::Result<Vec<Row>> {
    let mut host = PluginHost::new(cache)?;
    host.load_builtins()?;
    let manifest = std::fs::read_to_string(env!("SLUICE_TEST_PLUGIN_TEST_PROBE_MANIFEST"))
        .context("cannot read the test-probe manifest")?;
    let wasm = std::fs::read(env!("SLUICE_TEST_PLUGIN_TEST_PROBE_WASM"))
        .context("cannot read the test-probe wasm")?;
    let probe = host.load("test-probe", &manifest, &wasm)?;
    let commands = host
        .find("Build", "commands", "1")
        .context("no plugin serves Build/commands/1")?;

    // One workspace for all runs: the executor makes a fresh one per attempt, but that
    // is the executor's cost, not the plugin host's.
    let ws = tempfile::tempdir().context("cannot create a temp dir")?;
    std::fs::create_dir_all(ws.path().join("inputs").join("SourceOut"))
        .context("cannot create the input artifact")?;
    let request = |category: &str, config: &[(&str, &str)], inputs: &[&str]| RunRequest {
        workspace: ws.path().to_path_buf(),
        pipeline: "bench".to_string(),
        execution_id: "exec-1".to_string(),
        stage: "Build".to_string(),
        action: "A".to_string(),
        category: category.to_string(),
        config: config
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
        timeout: Duration::from_secs(60),
        attempt: 1,
        ..Default::default()
    };

    let mut rows = Vec::new();
    let noop = request("Invoke", &[("Mode", "noop")], &[]);
    rows.push(Row::new(
        "warm run: test-probe Mode=noop (store + instantiate + call)",
        Unit::Us,
        time_runs(&host, &probe, &noop, Expect::Succeeded, WARM_UP, WARM_RUNS).await?,
    ));
    // Store + instantiate only: the rest of the warm run is the call itself.
    let mut instantiations = Vec::with_capacity(WARM_RUNS);
    for i in 0..WARM_UP + WARM_RUNS {
        let started = Instant::now();
        host.instantiate(&probe, ws.path())
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
        if i >= WARM_UP {
            instantiations.push(started.elapsed());
        }
    }
    rows.push(Row::new(
        "  of which store + instantiate (no call)",
        Unit::Us,
        instantiations,
    ));
    // Rejected before the workspace is touched: the floor of `run` itself.
    let wrong_category = request("Deploy", &[("Mode", "noop")], &[]);
    rows.push(Row::new(
        "  run rejected: wrong category (no workspace, no store)",
        Unit::Us,
        time_runs(
            &host,
            &probe,
            &wrong_category,
            Expect::Failed("does not serve category"),
            WARM_UP,
            WARM_RUNS,
        )
        .await?,
    ));
    // Rejected after the workspace is prepared and the configuration checked, before
    // the store: everything `run` does ahead of instantiating.
    let bad_config = request("Invoke", &[], &[]);
    rows.push(Row::new(
        "  run rejected: invalid config (workspace checked, no store)",
        Unit::Us,
        time_runs(
            &host,
            &probe,
            &bad_config,
            Expect::Failed("invalid configuration"),
            WARM_UP,
            WARM_RUNS,
        )
        .await?,
    ));

    let build = request("Build", &[("Commands", "true")], &["SourceOut"]);
    rows.push(Row::new(
        "warm run: build-commands Commands=true (sh -e -c true)",
        Unit::Us,
        time_runs(
            &host,
            &commands,
            &build,
            Expect::Succeeded,
            SPAWN_WARM_UP,
            SPAWN_RUNS,
        )
        .await?,
    ));
    let exec = request(
        "Invoke",
        &[("Mode", "exec"), ("Program", "sh"), ("Args", "-c\ntrue")],
        &[],
    );
    rows.push(Row::new(
        "warm run: test-probe exec sh -c true",
        Unit::Us,
        time_runs(
            &host,
            &probe,
            &exec,
            Expect::Succeeded,
            SPAWN_WARM_UP,
            SPAWN_RUNS,
        )
        .await?,
    ));
    rows.push(Row::new(
        "native: spawn + wait sh -e -c true (as the exec call does)",
        Unit::Us,
        native_spawn(ws.path()).await?,
    ));
    Ok(rows)
}

/// Times `host.run` of `request`, `warm_up` unrecorded runs first; every outcome must
/// match `expect`.
async fn time_runs(
    host: &PluginHost,
    plugin: &LoadedPlugin,
    request: &RunRequest,
    expect: Expect,
    warm_up: usize,
    runs: usize,
) -> anyhow::Result<Vec<Duration>> {
    let mut samples = Vec::with_capacity(runs);
    for i in 0..warm_up + runs {
        // Cloned outside the timing: the executor builds its request anyway.
        let request = request.clone();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let started = Instant::now();
        let outcome = host.run(plugin, request, tx).await;
        let elapsed = started.elapsed();
        let mut log = Vec::new();
        while let Ok(chunk) = rx.try_recv() {
            log.extend_from_slice(&chunk);
        }
        let ok = match (&expect, &outcome) {
            (Expect::Succeeded, RunOutcome::Succeeded { .. }) => true,
            (Expect::Failed(needle), RunOutcome::Failed { message, .. }) => {
                message.contains(needle)
            }
            _ => false,
        };
        if !ok {
            bail!(
                "plugin {} ended unexpectedly: {outcome:?}\nlog:\n{}",
                plugin.manifest.id,
                String::from_utf8_lossy(&log)
            );
        }
        if i >= warm_up {
            samples.push(elapsed);
        }
    }
    Ok(samples)
}

/// `sh -e -c true` spawned natively with the exec host call's settings (clean
/// environment, own process group, piped output read to the end), for comparison.
async fn native_spawn(cwd: &Path) -> anyhow::Result<Vec<Duration>> {
    let mut samples = Vec::with_capacity(SPAWN_RUNS);
    for i in 0..SPAWN_WARM_UP + SPAWN_RUNS {
        let started = Instant::now();
        let output = tokio::process::Command::new("/bin/sh")
            .args(["-e", "-c", "true"])
            .env_clear()
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .output()
            .await
            .context("cannot run /bin/sh")?;
        let elapsed = started.elapsed();
        if !output.status.success() {
            bail!("/bin/sh -e -c true exited with {}", output.status);
        }
        if i >= SPAWN_WARM_UP {
            samples.push(elapsed);
        }
    }
    Ok(samples)
}

fn print_table(rows: &[Row]) {
    let width = rows.iter().map(|r| r.what.len()).max().unwrap_or(0);
    println!();
    println!(
        "{:<width$} {:>5} {:>12} {:>12} {:>12} {:>12}",
        "what", "n", "median", "p90", "min", "max"
    );
    for row in rows {
        let (Some(min), Some(max)) = (row.samples.first(), row.samples.last()) else {
            continue;
        };
        let f = |d: Duration| match row.unit {
            Unit::Ms => format!("{:.2} ms", d.as_secs_f64() * 1e3),
            Unit::Us => format!("{:.1} µs", d.as_secs_f64() * 1e6),
        };
        println!(
            "{:<width$} {:>5} {:>12} {:>12} {:>12} {:>12}",
            row.what,
            row.samples.len(),
            f(row.median()),
            f(percentile(&row.samples, 90.0)),
            f(*min),
            f(*max),
        );
    }
}

/// Nearest-rank percentile of sorted values (as in cli/benches/pipeline.rs).
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.clamp(1, sorted.len().max(1)) - 1)
        .copied()
        .unwrap_or_default()
}

/// Median of sorted durations (mean of the two middle ones for an even count).
fn median(sorted: &[Duration]) -> Duration {
    let n = sorted.len();
    match n {
        0 => Duration::ZERO,
        _ if n.is_multiple_of(2) => (sorted[n / 2 - 1] + sorted[n / 2]) / 2,
        _ => sorted[n / 2],
    }
}

/// Total size of the files in `dir` (the cache holds one `.cwasm` after a cold compile).
fn dir_size(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        total += entry?.metadata()?.len();
    }
    Ok(total)
}

/// The 1/5/15-minute load averages, to tell a quiet machine from a busy one.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_string())
}
