//! Execution history at scale: how long does one page of `GET /api/v1/executions` take
//! when the store holds 100,000 executions?
//!
//! A real SQLite file in a temp dir (`TMPDIR` decides where), migrated by
//! `Store::open`, then filled in one transaction with 100,000 executions spread over 20
//! pipelines (one a minute; about 1 in 10 Failed, 1 in 50 Stopped, the rest Succeeded;
//! 70 % started by hand, 20 % by webhook, 10 % by schedule), then opened again as a
//! controller would after a restart. Each case is what the history page asks for (51
//! rows: a page of 50 and one more to know whether another page exists) and is timed
//! from the store call to the JSON body the API would send (`serde_json::to_vec`).
//!
//! Run with `cargo bench -p sluice-controller --bench history`.

use std::time::{Duration, Instant};

use anyhow::Context;
use sluice_controller::store::{ExecutionFilter, HistoryPage, Store};

const PIPELINES: i64 = 20;
const EXECUTIONS: i64 = 100_000;
const PAGE: i64 = 51;
const WARM_UP: usize = 5;
const MEASURED: usize = 200;

/// A deterministic spread of values from an execution's seq (splitmix64).
fn mix(seq: i64) -> u64 {
    let mut z = (seq as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn fill(path: &std::path::Path) -> anyhow::Result<i64> {
    // Create the schema (and the pipelines) the way the controller does.
    {
        let store = Store::open(path).context("cannot open the store")?;
        for p in 0..PIPELINES {
            store.create_pipeline(&format!("pipeline-{p:02}"), "{}")?;
        }
    }
    let mut conn = rusqlite::Connection::open(path)?;
    let tx = conn.transaction()?;
    let base = 1_700_000_000_000_i64;
    {
        let mut insert = tx.prepare(
            "INSERT INTO executions (id, seq, pipeline_name, pipeline_version, status,
                 status_summary, trigger_type, trigger_detail, started_at_ms, finished_at_ms,
                 variables, source_revisions)
             VALUES (?1, ?2, ?3, 1, ?4, ?5, ?6, ?7, ?8, ?9, '{}', '{}')",
        )?;
        for seq in 1..=EXECUTIONS {
            let r = mix(seq);
            let status = match r % 100 {
                0..=9 => "Failed",
                10..=11 => "Stopped",
                _ => "Succeeded",
            };
            let trigger = match (r >> 8) % 10 {
                0..=6 => "StartPipelineExecution",
                7 | 8 => "Webhook",
                _ => "Schedule",
            };
            let started = base + seq * 60_000;
            let took = 5_000 + ((r >> 16) % 600_000) as i64;
            insert.execute(rusqlite::params![
                format!("{:08x}-0000-4000-8000-{:012x}", seq, r & 0xffff_ffff_ffff),
                seq,
                format!("pipeline-{:02}", seq % PIPELINES),
                status,
                (status == "Failed").then_some("Build failed: exit status 1"),
                trigger,
                "user admin",
                started,
                started + took,
            ])?;
        }
    }
    tx.commit()?;
    Ok(base)
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
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

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn measure(
    store: &Store,
    title: &str,
    filter: &ExecutionFilter<'_>,
    page: HistoryPage,
) -> anyhow::Result<()> {
    let mut rows = 0;
    let mut times = Vec::with_capacity(MEASURED);
    for run in 0..WARM_UP + MEASURED {
        let start = Instant::now();
        let page = store.execution_history(filter, page, PAGE)?;
        let body = serde_json::to_vec(&page)?;
        let took = start.elapsed();
        std::hint::black_box(body);
        rows = page.len();
        if run >= WARM_UP {
            times.push(took);
        }
    }
    anyhow::ensure!(rows > 0, "{title}: the page is empty");
    times.sort_unstable();
    println!(
        "{title:<46} {rows:>3} rows   median {:7.3} ms   p90 {:7.3} ms   min {:7.3} ms   max {:7.3} ms",
        ms(median(&times)),
        ms(percentile(&times, 90.0)),
        ms(times[0]),
        ms(times[times.len() - 1]),
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("cannot create a temp dir")?;
    let path = dir.path().join("sluice.db");
    let filling = Instant::now();
    let base = fill(&path)?;
    let size = std::fs::metadata(&path)?.len()
        + std::fs::metadata(path.with_extension("db-wal")).map_or(0, |m| m.len());
    println!(
        "{EXECUTIONS} executions across {PIPELINES} pipelines written in {:.1} s ({:.1} MiB with the WAL) at {}",
        filling.elapsed().as_secs_f64(),
        size as f64 / (1 << 20) as f64,
        path.display()
    );
    let store = Store::open(&path)?;
    println!("{MEASURED} runs per case after {WARM_UP} warm-up, {PAGE} rows asked for:");

    let one = ExecutionFilter {
        pipeline: Some("pipeline-07"),
        ..ExecutionFilter::default()
    };
    measure(&store, "first page (pipeline)", &one, HistoryPage::Newest)?;
    let failed = ExecutionFilter {
        status: Some("Failed"),
        ..one.clone()
    };
    measure(
        &store,
        "filtered page (pipeline, status=Failed)",
        &failed,
        HistoryPage::Newest,
    )?;
    // Executions of pipeline-07 have seq 7, 27, 47...: before=1007 is page 98 of 100.
    measure(
        &store,
        "deep keyset page (pipeline, before=1007)",
        &one,
        HistoryPage::Before(1007),
    )?;
    measure(
        &store,
        "newer page (pipeline, after=1007)",
        &one,
        HistoryPage::After(1007),
    )?;
    measure(
        &store,
        "deep filtered page (Failed, before=5007)",
        &failed,
        HistoryPage::Before(5007),
    )?;
    let webhook = ExecutionFilter {
        trigger_type: Some("Webhook"),
        ..one.clone()
    };
    measure(
        &store,
        "filtered page (pipeline, trigger=Webhook)",
        &webhook,
        HistoryPage::Newest,
    )?;
    // One day, 60 % of the way back: the scan walks the pipeline's newer rows first.
    let day_start = base + 40_000 * 60_000;
    let day = ExecutionFilter {
        started_from_ms: Some(day_start),
        started_to_ms: Some(day_start + 86_400_000),
        ..one.clone()
    };
    measure(
        &store,
        "date range page (pipeline, one day)",
        &day,
        HistoryPage::Newest,
    )?;
    let everywhere = ExecutionFilter {
        status: Some("Failed"),
        ..ExecutionFilter::default()
    };
    measure(
        &store,
        "all pipelines, status=Failed",
        &everywhere,
        HistoryPage::Newest,
    )?;
    measure(
        &store,
        "all pipelines, deep keyset page (before=2000)",
        &ExecutionFilter::default(),
        HistoryPage::Before(2000),
    )?;
    Ok(())
}
