//! Orchestration overhead: how long do pipelines whose actions do nothing take from
//! "start" to "Succeeded"?
//!
//! One process runs a controller (127.0.0.1, real TLS, a real SQLite file in a temp data
//! dir) and one local agent (joined through the HTTPS join with a token, capacity 3,
//! the built-in WASM plugins), the way `sluice up` does. Two pipelines are measured:
//!
//! - `wide`: 3 stages × 3 actions: three `Source/directory` snapshots of a one-file
//!   directory, then two stages of three `commands` actions running `true`;
//! - `narrow`: 2 stages × 1 action: one `Source/directory`, one `commands` running `true`.
//!
//! Each run is timed from `Engine::start_execution` to the moment the execution's
//! stored status is `Succeeded` (observed through the engine's events). Anything else
//! is an error. Run with `cargo bench -p sluice-cli --bench pipeline`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sluice_controller::engine::{Engine, Event};
use sluice_controller::store::ExecutionRow;
use sluice_controller::{Config, Controller, Settings};
use tokio::sync::broadcast::error::RecvError;

const WARM_UP: usize = 3;
const MEASURED: usize = 20;
const CAPACITY: u32 = 3;
/// Longest a single execution may take before the benchmark gives up.
const EXECUTION_TIMEOUT: Duration = Duration::from_secs(60);

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

fn source_action(name: &str, path: &Path, output: &str) -> String {
    format!(
        "      - name: {name}
        actionTypeId: {{category: Source, owner: Sluice, provider: directory, version: \"1\"}}
        configuration:
          Path: {path}
        outputArtifacts: [{output}]
",
        path = path.display()
    )
}

fn commands_action(name: &str, category: &str) -> String {
    format!(
        "      - name: {name}
        actionTypeId: {{category: {category}, owner: Sluice, provider: commands, version: \"1\"}}
        configuration:
          Commands: \"true\"
        inputArtifacts: [Src1]
"
    )
}

/// 3 stages × 3 actions.
fn wide_pipeline(source: &Path) -> String {
    let mut yaml = String::from("name: wide\nstages:\n  - name: Source\n    actions:\n");
    for i in 1..=3 {
        yaml.push_str(&source_action(&format!("S{i}"), source, &format!("Src{i}")));
    }
    yaml.push_str("  - name: Build\n    actions:\n");
    for i in 1..=3 {
        yaml.push_str(&commands_action(&format!("B{i}"), "Build"));
    }
    yaml.push_str("  - name: Test\n    actions:\n");
    for i in 1..=3 {
        yaml.push_str(&commands_action(&format!("T{i}"), "Test"));
    }
    yaml
}

/// 2 stages × 1 action.
fn narrow_pipeline(source: &Path) -> String {
    let mut yaml = String::from("name: narrow\nstages:\n  - name: Source\n    actions:\n");
    yaml.push_str(&source_action("S1", source, "Src1"));
    yaml.push_str("  - name: Build\n    actions:\n");
    yaml.push_str(&commands_action("B1", "Build"));
    yaml
}

fn create_pipeline(engine: &Engine, yaml: &str) -> anyhow::Result<String> {
    let parsed =
        sluice_pipeline::parse_and_validate(yaml, None, &sluice_pipeline::Catalog::builtin())
            .map_err(|d| anyhow::anyhow!("invalid benchmark pipeline: {d}\n{yaml}"))?;
    let name = parsed.pipeline.name.clone();
    engine
        .store()
        .create_pipeline(&name, &parsed.pipeline.to_json())
        .with_context(|| format!("cannot create pipeline {name}"))?;
    Ok(name)
}

/// Starts one execution and waits until it succeeds; returns the elapsed time and the row.
async fn run_once(engine: &Engine, pipeline: &str) -> anyhow::Result<(Duration, ExecutionRow)> {
    // Subscribe first so that no transition can slip between the start and the wait.
    let mut events = engine.subscribe();
    let started = Instant::now();
    let execution = engine
        .start_execution(pipeline, "Benchmark", "cargo bench")
        .with_context(|| format!("cannot start pipeline {pipeline}"))?;
    let id = execution.id.clone();
    let mut row = execution;
    loop {
        match row.status.as_str() {
            "Succeeded" => return Ok((started.elapsed(), row)),
            "InProgress" => {}
            other => bail!(
                "execution {id} of {pipeline} ended {other}: {}",
                row.status_summary.as_deref().unwrap_or("(no summary)")
            ),
        }
        let changed = loop {
            match tokio::time::timeout(EXECUTION_TIMEOUT, events.recv()).await {
                Err(_) => bail!(
                    "execution {id} of {pipeline} still {} after {EXECUTION_TIMEOUT:?}",
                    row.status
                ),
                Ok(Ok(Event::Execution(changed))) if changed == id => break true,
                Ok(Ok(_)) => {}
                // Missed events: re-read to be safe.
                Ok(Err(RecvError::Lagged(_))) => break true,
                Ok(Err(RecvError::Closed)) => bail!("the engine's event channel closed"),
            }
        };
        if changed {
            row = engine
                .store()
                .execution(&id)
                .with_context(|| format!("cannot read execution {id}"))?;
        }
    }
}

/// Per-run figures.
struct Sample {
    total: Duration,
    /// finished_at_ms - started_at_ms of the watched `commands` attempt.
    commands_ms: i64,
    /// finished_at_ms - started_at_ms of the watched `directory` attempt.
    source_ms: i64,
    /// started_at_ms - queued_at_ms, every attempt of the run.
    queue_to_start_ms: Vec<i64>,
    /// The execution's stored duration minus, per stage, the span from its first
    /// accepted attempt to its last finished one: time no attempt was running, i.e.
    /// controller work and messages between controller and agent.
    outside_attempts_ms: i64,
}

async fn measure(engine: &Engine, pipeline: &str) -> anyhow::Result<Vec<Sample>> {
    for _ in 0..WARM_UP {
        run_once(engine, pipeline).await?;
    }
    let mut samples = Vec::with_capacity(MEASURED);
    for _ in 0..MEASURED {
        let (total, row) = run_once(engine, pipeline).await?;
        let attempts = engine
            .store()
            .attempts(&row.id)
            .with_context(|| format!("cannot read the attempts of {}", row.id))?;
        let duration = |stage: i64, action: &str| -> anyhow::Result<i64> {
            let a = attempts
                .iter()
                .find(|a| a.stage_index == stage && a.action_name == action)
                .with_context(|| format!("no attempt of stage {stage} action {action}"))?;
            match (a.started_at_ms, a.finished_at_ms) {
                (Some(s), Some(f)) => Ok(f - s),
                _ => bail!("attempt {} has no start or end time", a.id),
            }
        };
        let mut spans = 0;
        for stage in 0..=attempts.iter().map(|a| a.stage_index).max().unwrap_or(0) {
            let of_stage = || attempts.iter().filter(|a| a.stage_index == stage);
            let first = of_stage().filter_map(|a| a.started_at_ms).min();
            let last = of_stage().filter_map(|a| a.finished_at_ms).max();
            match (first, last) {
                (Some(first), Some(last)) => spans += last - first,
                _ => bail!("stage {stage} of {} has no start or end time", row.id),
            }
        }
        let finished = row
            .finished_at_ms
            .with_context(|| format!("execution {} has no end time", row.id))?;
        samples.push(Sample {
            total,
            outside_attempts_ms: finished - row.started_at_ms - spans,
            commands_ms: duration(1, "B1")?,
            source_ms: duration(0, "S1")?,
            queue_to_start_ms: attempts
                .iter()
                .filter_map(|a| a.started_at_ms.map(|s| s - a.queued_at_ms))
                .collect(),
        });
    }
    Ok(samples)
}

/// Nearest-rank percentile of sorted values.
fn percentile<T: Copy>(sorted: &[T], p: f64) -> T {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Median of sorted durations (mean of the two middle ones for an even count).
fn median(sorted: &[Duration]) -> Duration {
    let n = sorted.len();
    if n.is_multiple_of(2) {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2
    } else {
        sorted[n / 2]
    }
}

fn median_ms(values: impl Iterator<Item = i64>) -> f64 {
    let mut v: Vec<i64> = values.collect();
    v.sort_unstable();
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n.is_multiple_of(2) {
        (v[n / 2 - 1] + v[n / 2]) as f64 / 2.0
    } else {
        v[n / 2] as f64
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn report(title: &str, samples: &[Sample], actions: u32, stages: u32) {
    let mut totals: Vec<Duration> = samples.iter().map(|s| s.total).collect();
    totals.sort_unstable();
    let med = median(&totals);
    println!("{title}: {} runs after {WARM_UP} warm-up", totals.len());
    println!(
        "  start -> Succeeded   median {:8.2} ms   p90 {:8.2} ms   min {:8.2} ms   max {:8.2} ms",
        ms(med),
        ms(percentile(&totals, 90.0)),
        ms(totals[0]),
        ms(totals[totals.len() - 1]),
    );
    println!(
        "  per action (median / {actions}) {:6.2} ms   per stage (median / {stages}) {:6.2} ms",
        ms(med) / f64::from(actions),
        ms(med) / f64::from(stages),
    );
    println!(
        "  attempt, accepted -> finished (median, ms resolution): commands `true` {:.1} ms, directory source {:.1} ms",
        median_ms(samples.iter().map(|s| s.commands_ms)),
        median_ms(samples.iter().map(|s| s.source_ms)),
    );
    println!(
        "  attempt, queued -> accepted (median over all attempts): {:.1} ms",
        median_ms(
            samples
                .iter()
                .flat_map(|s| s.queue_to_start_ms.iter().copied())
        ),
    );
    let outside = median_ms(samples.iter().map(|s| s.outside_attempts_ms));
    println!(
        "  no attempt running (controller + messages, from history): median {outside:.1} ms = {:.2} ms per action",
        outside / f64::from(actions),
    );
}

async fn bench() -> anyhow::Result<()> {
    let root = tempfile::tempdir().context("cannot create a temp dir")?;
    let source = root.path().join("source");
    std::fs::create_dir_all(&source).context("cannot create the source dir")?;
    std::fs::write(source.join("hello.txt"), "hello\n").context("cannot write the source")?;

    let controller = Controller::start(Config {
        data_dir: root.path().join("controller"),
        listen: "127.0.0.1:0".parse().context("listen address")?,
        tls_cert_and_key: None,
        tls_names: Vec::new(),
        settings: Settings::default(),
        builtin_plugins: sluice_agent::builtin::all()
            .iter()
            .map(|b| (b.manifest, b.wasm))
            .collect(),
        event_webhooks: Vec::new(),
        event_webhook_secret: None,
        admin_password: None,
    })
    .await
    .context("cannot start the controller")?;

    let agent_state = root.path().join("agent");
    let state = sluice_agent::StateDir::new(&agent_state);
    let join_token = controller
        .create_join_token(
            &BTreeMap::from([("local".to_string(), "true".to_string())]),
            Duration::from_secs(300),
        )
        .context("cannot create a join token")?;
    sluice_agent::join(
        &state,
        sluice_agent::JoinRequest {
            controller_url: &controller.url(),
            token: &join_token,
            ca_fingerprint: &controller.ca_fingerprint(),
            labels: BTreeMap::new(),
            capacity: CAPACITY,
            server_ca: None,
        },
    )
    .await
    .context("the agent could not join")?;
    let agent = tokio::spawn(sluice_agent::run(sluice_agent::Options {
        state_dir: agent_state,
        capacity: CAPACITY,
        extra_labels: BTreeMap::new(),
        max_log_bytes: sluice_agent::executor::DEFAULT_MAX_LOG_BYTES,
        plugin_cache: None,
    }));

    let engine: Arc<Engine> = controller.engine().clone();
    let connecting = Instant::now();
    while engine.agent_activity().is_empty() {
        if agent.is_finished() {
            bail!("the agent stopped before connecting");
        }
        if connecting.elapsed() > Duration::from_secs(60) {
            bail!("the agent did not connect within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "controller {} and agent (capacity {CAPACITY}) ready; agent connected {:.0} ms after join",
        controller.url(),
        ms(connecting.elapsed())
    );

    let wide = create_pipeline(&engine, &wide_pipeline(&source))?;
    let narrow = create_pipeline(&engine, &narrow_pipeline(&source))?;

    let wide_samples = measure(&engine, &wide).await?;
    let narrow_samples = measure(&engine, &narrow).await?;
    println!();
    report(
        "3 stages x 3 actions (3 directory sources, 6 `commands: true`)",
        &wide_samples,
        9,
        3,
    );
    println!();
    report(
        "2 stages x 1 action (1 directory source, 1 `commands: true`)",
        &narrow_samples,
        2,
        2,
    );

    agent.abort();
    controller.shutdown();
    Ok(())
}
