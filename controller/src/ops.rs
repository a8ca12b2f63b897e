//! Operations: readiness (`GET /readyz`), Prometheus metrics (`GET /metrics`) and the
//! OpenAPI document of the HTTP API (`GET /api/v1/openapi.json`).
//!
//! Metrics are written by hand in the Prometheus text exposition format 0.0.4: the
//! `prometheus-client` crate only writes OpenMetrics text (counters renamed, a trailing
//! `# EOF`), and every value here is read at scrape time (SQLite, the engine's queue,
//! the agents' last heartbeats) rather than kept in a registry.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::json;
use sluice_proto::PluginCacheStats;

use crate::engine::Engine;
use crate::store::{FinishedAttempt, StoreError};

/// The OpenAPI 3.1 document of the HTTP API (`controller/openapi.json`).
pub const OPENAPI: &str = include_str!("../openapi.json");

/// The content type of the Prometheus text exposition format.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How many of the most recent finished attempts the duration histogram covers.
pub const DURATION_WINDOW: i64 = 10_000;

/// Upper bounds (seconds) of the action duration histogram's buckets.
const DURATION_BUCKETS: &[f64] = &[
    0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

/// Agent states always reported, even when no agent is in them.
const AGENT_STATES: &[&str] = &["online", "offline", "registered", "revoked"];

/// Errors collecting metrics.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// (category, provider) of each action of one pipeline version, by (stage index, name).
type ActionTypes = HashMap<(i64, String), (String, String)>;

/// What the operations endpoints keep in memory.
#[derive(Default)]
pub struct Ops {
    /// Set once the engine has recovered its state from the store.
    recovered: AtomicBool,
    /// The last plugin cache totals each agent reported in a heartbeat.
    plugin_cache: Mutex<BTreeMap<String, PluginCacheStats>>,
    /// Action types of pipeline versions (immutable once stored), so a scrape parses
    /// each definition once.
    action_types: Mutex<HashMap<(String, i64), Arc<ActionTypes>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Ops {
    /// Fresh state: not yet recovered, no reports.
    pub fn new() -> Ops {
        Ops::default()
    }

    /// Records that the engine recovered its state; `/readyz` needs it.
    pub fn set_recovered(&self) {
        self.recovered.store(true, Ordering::SeqCst);
    }

    /// Records an agent's latest plugin cache totals.
    pub fn plugin_cache_report(&self, agent_id: &str, stats: PluginCacheStats) {
        lock(&self.plugin_cache).insert(agent_id.to_string(), stats);
    }

    /// The sum of the last totals every agent reported (agents that disconnected
    /// included, so the sum does not drop when one goes away).
    pub fn plugin_cache_totals(&self) -> PluginCacheStats {
        lock(&self.plugin_cache)
            .values()
            .fold(PluginCacheStats::default(), |sum, s| PluginCacheStats {
                hits: sum.hits.saturating_add(s.hits),
                misses: sum.misses.saturating_add(s.misses),
            })
    }

    /// `/readyz`: the HTTP status and JSON body. Ready means the engine recovered and
    /// the database answers a query.
    pub fn readiness(&self, engine: &Engine) -> (u16, serde_json::Value) {
        let mut problems = Vec::new();
        if !self.recovered.load(Ordering::SeqCst) {
            problems.push((
                "engine",
                "the engine has not recovered executions from the database yet".to_string(),
            ));
        }
        if let Err(e) = engine.store().ping() {
            problems.push(("database", format!("the database cannot be read: {e}")));
        }
        readiness_answer(&problems)
    }

    /// `/metrics`: every metric, in the Prometheus text format 0.0.4.
    pub fn render_metrics(&self, engine: &Engine) -> Result<String, OpsError> {
        let store = engine.store();
        let mut out = Text::default();

        out.family(
            "sluice_executions",
            "gauge",
            "Executions in the database by pipeline and status, counted at scrape time.",
        );
        for (pipeline, status, count) in store.execution_counts()? {
            out.sample(
                "sluice_executions",
                &[("pipeline", &pipeline), ("status", &status)],
                count as f64,
            );
        }

        out.family(
            "sluice_action_duration_seconds",
            "histogram",
            &format!(
                "Start-to-end duration of finished action attempts, read from the database at \
                 scrape time over the most recent {DURATION_WINDOW} finished attempts (a sliding \
                 window: counts stop growing once it is full)."
            ),
        );
        let attempts = store.finished_attempt_durations(DURATION_WINDOW)?;
        for ((category, provider, status), histogram) in self.histograms(engine, &attempts) {
            out.histogram(
                "sluice_action_duration_seconds",
                &[
                    ("category", &category),
                    ("provider", &provider),
                    ("status", &status),
                ],
                &histogram,
            );
        }

        out.family(
            "sluice_queue_depth",
            "gauge",
            "Action attempts queued and waiting for an agent.",
        );
        out.sample("sluice_queue_depth", &[], engine.queue_depth() as f64);

        out.family(
            "sluice_agents",
            "gauge",
            "Registered agents by state (online, offline, registered, revoked).",
        );
        let mut agents = store.agent_counts()?;
        for state in AGENT_STATES {
            agents.entry((*state).to_string()).or_insert(0);
        }
        for (state, count) in agents {
            out.sample("sluice_agents", &[("state", &state)], count as f64);
        }

        let cache = self.plugin_cache_totals();
        out.family(
            "sluice_plugin_cache_hits_total",
            "counter",
            "Plugin loads served by the agents' compiled-plugin caches: the sum of each \
             agent's last reported total since it started.",
        );
        out.sample("sluice_plugin_cache_hits_total", &[], cache.hits as f64);
        out.family(
            "sluice_plugin_cache_misses_total",
            "counter",
            "Plugin loads the agents had to compile: the sum of each agent's last reported \
             total since it started.",
        );
        out.sample("sluice_plugin_cache_misses_total", &[], cache.misses as f64);

        Ok(out.0)
    }

    /// Groups attempts into one histogram per (category, provider, status).
    fn histograms(
        &self,
        engine: &Engine,
        attempts: &[FinishedAttempt],
    ) -> BTreeMap<(String, String, String), Histogram> {
        let mut out: BTreeMap<(String, String, String), Histogram> = BTreeMap::new();
        for attempt in attempts {
            let types = self.action_types(engine, &attempt.pipeline_name, attempt.pipeline_version);
            let (category, provider) = types
                .get(&(attempt.stage_index, attempt.action_name.clone()))
                .cloned()
                .unwrap_or_else(|| ("unknown".into(), "unknown".into()));
            out.entry((category, provider, attempt.status.clone()))
                .or_insert_with(Histogram::new)
                .observe(attempt.duration_ms as f64 / 1000.0);
        }
        out
    }

    fn action_types(&self, engine: &Engine, pipeline: &str, version: i64) -> Arc<ActionTypes> {
        let key = (pipeline.to_string(), version);
        if let Some(known) = lock(&self.action_types).get(&key) {
            return known.clone();
        }
        let mut types = ActionTypes::new();
        match engine.store().pipeline_version(pipeline, Some(version)) {
            Ok(stored) => {
                match sluice_pipeline::parse(
                    &stored.definition,
                    Some(sluice_pipeline::Format::Json),
                ) {
                    Ok(parsed) => {
                        for (index, stage) in parsed.pipeline.stages.iter().enumerate() {
                            for action in &stage.actions {
                                types.insert(
                                    (index as i64, action.name.clone()),
                                    (
                                        action.action_type_id.category.to_string(),
                                        action.action_type_id.provider.clone(),
                                    ),
                                );
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(pipeline, version, error = %e, "Stored definition unreadable for metrics.")
                    }
                }
            }
            // Not cached: the next scrape tries again.
            Err(e) => {
                tracing::warn!(pipeline, version, error = %e, "Cannot read a pipeline version for metrics.");
                return Arc::new(types);
            }
        }
        let types = Arc::new(types);
        lock(&self.action_types).insert(key, types.clone());
        types
    }
}

/// The `/readyz` answer for a list of (component, problem).
fn readiness_answer(problems: &[(&str, String)]) -> (u16, serde_json::Value) {
    if problems.is_empty() {
        return (200, json!({"status": "ready"}));
    }
    let message = problems
        .iter()
        .map(|(what, why)| format!("{what}: {why}"))
        .collect::<Vec<_>>()
        .join("; ");
    let errors: Vec<serde_json::Value> = problems
        .iter()
        .map(|(what, why)| json!({"path": what, "message": why}))
        .collect();
    (
        503,
        json!({
            "status": "not_ready",
            "code": "not_ready",
            "message": message,
            "errors": errors,
        }),
    )
}

/// Cumulative bucket counts, sum and count of observations.
#[derive(Debug, Clone, PartialEq)]
struct Histogram {
    /// Observations at or below each bound of `DURATION_BUCKETS`.
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new() -> Histogram {
        Histogram {
            buckets: vec![0; DURATION_BUCKETS.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, value: f64) {
        for (bound, bucket) in DURATION_BUCKETS.iter().zip(self.buckets.iter_mut()) {
            if value <= *bound {
                *bucket += 1;
            }
        }
        self.sum += value;
        self.count += 1;
    }
}

/// A Prometheus text format 0.0.4 writer.
#[derive(Default)]
struct Text(String);

impl Text {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (label, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{label}=\"{}\"", escape_label(value));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {}", format_value(value));
    }

    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &Histogram) {
        let bucket = format!("{name}_bucket");
        for (bound, count) in DURATION_BUCKETS.iter().zip(&h.buckets) {
            let le = format_value(*bound);
            let mut with_le = labels.to_vec();
            with_le.push(("le", &le));
            self.sample(&bucket, &with_le, *count as f64);
        }
        let mut with_le = labels.to_vec();
        with_le.push(("le", "+Inf"));
        self.sample(&bucket, &with_le, h.count as f64);
        self.sample(&format!("{name}_sum"), labels, h.sum);
        self.sample(&format!("{name}_count"), labels, h.count as f64);
    }
}

/// Escapes a label value: backslash, double quote and line feed.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A sample value as Go's `strconv.ParseFloat` reads it.
fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{value}")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn text_format_escapes_labels_and_writes_cumulative_histograms() {
        let mut text = Text::default();
        text.family("m", "gauge", "Help with \\ and\nnewline.");
        text.sample(
            "m",
            &[("pipeline", "a\"b\\c\nd"), ("status", "Succeeded")],
            2.0,
        );
        text.sample("m", &[], 0.5);
        let mut h = Histogram::new();
        h.observe(0.2);
        h.observe(7.0);
        h.observe(5000.0);
        text.histogram("d", &[("status", "Failed")], &h);
        let out = text.0;
        assert!(out.starts_with("# HELP m Help with \\\\ and\\nnewline.\n# TYPE m gauge\n"));
        assert!(
            out.contains("m{pipeline=\"a\\\"b\\\\c\\nd\",status=\"Succeeded\"} 2\n"),
            "{out}"
        );
        assert!(out.contains("\nm 0.5\n"), "{out}");
        assert!(
            out.contains("d_bucket{status=\"Failed\",le=\"0.5\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("d_bucket{status=\"Failed\",le=\"10\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("d_bucket{status=\"Failed\",le=\"3600\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("d_bucket{status=\"Failed\",le=\"+Inf\"} 3\n"),
            "{out}"
        );
        assert!(out.contains("d_sum{status=\"Failed\"} 5007.2\n"), "{out}");
        assert!(out.contains("d_count{status=\"Failed\"} 3\n"), "{out}");
    }

    #[test]
    fn readiness_names_what_is_not_ready() {
        assert_eq!(readiness_answer(&[]), (200, json!({"status": "ready"})));
        let (status, body) = readiness_answer(&[("database", "disk I/O error".into())]);
        assert_eq!(status, 503);
        assert_eq!(body["status"], "not_ready");
        assert_eq!(body["errors"][0]["path"], "database");
        assert!(body["message"].as_str().unwrap().contains("disk I/O error"));
    }

    #[test]
    fn plugin_cache_totals_sum_the_last_report_of_each_agent() {
        let ops = Ops::new();
        ops.plugin_cache_report("a", PluginCacheStats { hits: 1, misses: 5 });
        ops.plugin_cache_report("a", PluginCacheStats { hits: 4, misses: 5 });
        ops.plugin_cache_report("b", PluginCacheStats { hits: 2, misses: 0 });
        assert_eq!(
            ops.plugin_cache_totals(),
            PluginCacheStats { hits: 6, misses: 5 }
        );
    }

    /// Every route the source defines is in the OpenAPI document with its method, and
    /// every documented operation is a route.
    #[test]
    fn openapi_documents_exactly_the_routes_in_the_source() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        let mut documented = std::collections::BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                if ["get", "post", "put", "delete", "patch", "head"].contains(&method.as_str()) {
                    documented.insert((method.to_uppercase(), normalise(path)));
                }
            }
        }
        let mut defined = std::collections::BTreeSet::new();
        for file in ["api.rs", "api/web.rs", "webhooks.rs", "events.rs"] {
            let text =
                std::fs::read_to_string(format!("{}/src/{file}", env!("CARGO_MANIFEST_DIR")))
                    .unwrap();
            defined.extend(routes_in(&text));
        }
        assert!(
            defined.len() > 30,
            "the route scan found too little: {defined:?}"
        );
        let undocumented: Vec<_> = defined.difference(&documented).collect();
        assert!(
            undocumented.is_empty(),
            "routes missing from controller/openapi.json: {undocumented:?}"
        );
        let stale: Vec<_> = documented.difference(&defined).collect();
        assert!(
            stale.is_empty(),
            "controller/openapi.json documents routes the source does not define: {stale:?}"
        );
    }

    /// `/a/{id}/b` → `/a/{}/b`.
    fn normalise(path: &str) -> String {
        path.split('/')
            .map(|s| if s.starts_with('{') { "{}" } else { s })
            .collect::<Vec<_>>()
            .join("/")
    }

    /// (METHOD, path) of every route in a source file: `let NAME = PREFIX.and(…)` chains
    /// with `warp::path!(…)`, `warp::path("…")`, `warp::path::tail()` or `warp::fs::dir`
    /// (a path parameter each) and `warp::METHOD()`. A chain with a path but no method
    /// is a prefix (`let api = warp::path("api").and(warp::path("v1"))`) that later
    /// chains may start from.
    fn routes_in(source: &str) -> Vec<(String, String)> {
        let mut routes = Vec::new();
        let mut prefixes: HashMap<String, String> = HashMap::new();
        // Statements starting with `let` at the start of a line.
        let mut starts = Vec::new();
        let mut offset = 0;
        for line in source.split_inclusive('\n') {
            let indent = line.len() - line.trim_start().len();
            if line.trim_start().starts_with("let ") {
                starts.push(offset + indent + "let ".len());
            }
            offset += line.len();
        }
        for (i, start) in starts.iter().enumerate() {
            let chunk = &source[*start..starts.get(i + 1).copied().unwrap_or(source.len())];
            let Some((name, rest)) = chunk.split_once('=') else {
                continue;
            };
            let name = name.split(':').next().unwrap_or("").trim().to_string();
            // The filter part: up to where the handler starts.
            let end = [".and_then(", ".map(", ".untuple_one(", ";"]
                .iter()
                .filter_map(|m| rest.find(m))
                .min()
                .unwrap_or(rest.len());
            let filter = rest[..end].trim_start();
            let head: String = filter
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let mut path = prefixes.get(&head).cloned().unwrap_or_default();
            if !filter.contains("warp::path") && path.is_empty() {
                continue;
            }
            let mut at = 0;
            while let Some(found) = filter[at..].find("warp::path") {
                let start = at + found + "warp::path".len();
                at = start;
                let rest = &filter[start..];
                if let Some(args) = rest.strip_prefix("!(") {
                    let close = args.find(')').unwrap();
                    for segment in args[..close].split('/') {
                        let segment = segment.trim().trim_end_matches(',').trim();
                        if let Some(literal) = segment.strip_prefix('"') {
                            path.push('/');
                            path.push_str(literal.trim_end_matches('"'));
                        } else if !segment.is_empty() {
                            path.push_str("/{}");
                        }
                    }
                } else if let Some(args) = rest.strip_prefix("(\"") {
                    let close = args.find('"').unwrap();
                    path.push('/');
                    path.push_str(&args[..close]);
                } else if rest.starts_with("::tail()") {
                    path.push_str("/{}");
                }
            }
            if filter.contains("warp::fs::dir(") {
                path.push_str("/{}");
            }
            let method = ["get", "post", "put", "delete", "patch", "head"]
                .iter()
                .find(|m| filter.contains(&format!("warp::{m}()")))
                .map(|m| m.to_uppercase());
            match method {
                Some(method) if path.is_empty() => routes.push((method, "/".to_string())),
                Some(method) => routes.push((method, path)),
                None => {
                    prefixes.insert(name, path);
                }
            }
        }
        routes
    }
}
