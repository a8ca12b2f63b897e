//! The scheduler: starts pipelines at the fire times of their `schedules` (cron
//! expressions evaluated in an IANA time zone).
//!
//! Every [`RELOAD_INTERVAL`] the current definition of every pipeline is read again, so a
//! created, updated or removed schedule takes effect within a few seconds. Between
//! reloads the task sleeps until the next fire time. Each schedule's next fire time is
//! kept in memory only: fires missed while the controller was down (or while it was
//! behind) are not replayed; the next one after "now" is taken.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sluice_pipeline::{Pipeline, Schedule};

use crate::engine::{Engine, StartOptions};

/// How often the definitions are read again.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// The current definition of every pipeline, each version parsed once.
#[derive(Default)]
pub(crate) struct Definitions {
    cache: HashMap<String, (i64, Arc<Pipeline>)>,
}

impl Definitions {
    /// Every pipeline's current definition; `None` if the store could not be read (the
    /// caller keeps what it had).
    pub(crate) fn current(&mut self, engine: &Engine) -> Option<Vec<(String, Arc<Pipeline>)>> {
        let listed = match engine.store().list_pipelines() {
            Ok(listed) => listed,
            Err(e) => {
                tracing::warn!(error = %e, "Cannot list pipelines for triggers.");
                return None;
            }
        };
        let mut current = Vec::with_capacity(listed.len());
        let mut cache = HashMap::with_capacity(listed.len());
        for summary in listed {
            let cached = self
                .cache
                .remove(&summary.name)
                .filter(|(version, _)| *version == summary.version);
            let def = match cached {
                Some((_, def)) => def,
                None => match parse_version(engine, &summary.name, summary.version) {
                    Some(def) => def,
                    None => continue,
                },
            };
            current.push((summary.name.clone(), def.clone()));
            cache.insert(summary.name, (summary.version, def));
        }
        self.cache = cache;
        Some(current)
    }
}

fn parse_version(engine: &Engine, name: &str, version: i64) -> Option<Arc<Pipeline>> {
    let stored = match engine.store().pipeline_version(name, Some(version)) {
        Ok(stored) => stored,
        Err(e) => {
            tracing::warn!(pipeline = name, version, error = %e, "Cannot read the definition for triggers.");
            return None;
        }
    };
    match sluice_pipeline::parse(&stored.definition, Some(sluice_pipeline::Format::Json)) {
        Ok(parsed) => Some(Arc::new(parsed.pipeline)),
        Err(e) => {
            tracing::warn!(pipeline = name, version, error = %e, "Stored definition does not parse.");
            None
        }
    }
}

/// Identifies one schedule of one pipeline: an update that keeps it keeps its next fire.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    pipeline: String,
    index: usize,
    cron: String,
    time_zone: String,
    variables: BTreeMap<String, String>,
}

struct Entry {
    schedule: Schedule,
    next: Option<DateTime<Utc>>,
}

/// The schedules of every pipeline and their next fire times.
#[derive(Default)]
pub struct Schedules {
    entries: HashMap<Key, Entry>,
}

impl Schedules {
    /// Takes the schedules of `definitions`: new ones get their first fire time after
    /// `now`, unchanged ones keep theirs, removed ones are dropped.
    pub fn sync(&mut self, definitions: &[(String, Arc<Pipeline>)], now: DateTime<Utc>) {
        let mut entries = HashMap::new();
        for (name, def) in definitions {
            for (index, schedule) in def.schedules.iter().enumerate() {
                let key = Key {
                    pipeline: name.clone(),
                    index,
                    cron: schedule.cron.clone(),
                    time_zone: schedule.time_zone.clone(),
                    variables: schedule.variables.clone(),
                };
                let entry = self.entries.remove(&key).unwrap_or_else(|| Entry {
                    schedule: schedule.clone(),
                    next: schedule.next_fire(now),
                });
                entries.insert(key, entry);
            }
        }
        self.entries = entries;
    }

    /// The schedules due at `now`, as (pipeline, schedule); each moves on to its first
    /// fire time after `now` (missed fires are not replayed).
    pub fn take_due(&mut self, now: DateTime<Utc>) -> Vec<(String, Schedule)> {
        let mut due = Vec::new();
        for (key, entry) in &mut self.entries {
            if entry.next.is_some_and(|next| next <= now) {
                due.push((key.pipeline.clone(), entry.schedule.clone()));
                entry.next = entry.schedule.next_fire(now);
            }
        }
        due.sort_by(|a, b| a.0.cmp(&b.0));
        due
    }

    /// The earliest next fire time.
    pub fn next_wake(&self) -> Option<DateTime<Utc>> {
        self.entries.values().filter_map(|e| e.next).min()
    }
}

/// What a scheduled execution records as its trigger detail.
pub fn trigger_detail(schedule: &Schedule) -> String {
    format!("cron {} {}", schedule.cron, schedule.time_zone)
}

/// Runs the scheduler until the task is aborted.
pub async fn run(engine: Arc<Engine>) {
    let mut definitions = Definitions::default();
    let mut schedules = Schedules::default();
    let mut reload_at = tokio::time::Instant::now();
    loop {
        if tokio::time::Instant::now() >= reload_at {
            if let Some(current) = definitions.current(&engine) {
                schedules.sync(&current, Utc::now());
            }
            reload_at = tokio::time::Instant::now() + RELOAD_INTERVAL;
        }
        for (pipeline, schedule) in schedules.take_due(Utc::now()) {
            let options = StartOptions {
                variables: schedule.variables.clone(),
                ..StartOptions::default()
            };
            let detail = trigger_detail(&schedule);
            match engine.start_execution_with(&pipeline, "Schedule", &detail, &options) {
                Ok((execution, _)) => {
                    tracing::info!(pipeline, execution = %execution.id, schedule = %detail, "Scheduled execution started.");
                }
                Err(e) => {
                    tracing::warn!(pipeline, schedule = %detail, error = %e, "Scheduled execution could not start.");
                }
            }
        }
        let mut wake = reload_at;
        if let Some(next) = schedules.next_wake() {
            let until = (next - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            // One extra millisecond so the wall clock has reached the fire time.
            wake = wake.min(tokio::time::Instant::now() + until + Duration::from_millis(1));
        }
        tokio::time::sleep_until(wake).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn pipeline(schedules: &str) -> Arc<Pipeline> {
        let text = format!(
            r#"name: p
schedules: {schedules}
stages:
  - name: S
    actions:
      - {{name: A, actionTypeId: {{category: Source, provider: directory}}, configuration: {{Path: /x}}, outputArtifacts: [C]}}
  - name: B
    actions:
      - {{name: B, actionTypeId: {{category: Build, provider: commands}}, configuration: {{Commands: x}}, inputArtifacts: [C]}}
"#
        );
        Arc::new(sluice_pipeline::parse(&text, None).unwrap().pipeline)
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn due_schedules_fire_once_and_missed_fires_are_not_replayed() {
        let defs = vec![(
            "p".to_owned(),
            pipeline(r#"[{cron: "0 * * * *", timeZone: UTC}]"#),
        )];
        let mut s = Schedules::default();
        s.sync(&defs, at("2024-01-01T00:30:00Z"));
        assert_eq!(s.next_wake(), Some(at("2024-01-01T01:00:00Z")));
        assert!(s.take_due(at("2024-01-01T00:59:59Z")).is_empty());
        // Three hours late: one start, and the next fire is the next hour after now.
        let due = s.take_due(at("2024-01-01T04:10:00Z"));
        assert_eq!(due.len(), 1);
        assert_eq!(trigger_detail(&due[0].1), "cron 0 * * * * UTC");
        assert_eq!(s.next_wake(), Some(at("2024-01-01T05:00:00Z")));
        // Re-reading the same definition keeps the fire time; removing it drops it.
        s.sync(&defs, at("2024-01-01T04:20:00Z"));
        assert_eq!(s.next_wake(), Some(at("2024-01-01T05:00:00Z")));
        s.sync(
            &[("p".to_owned(), pipeline("[]"))],
            at("2024-01-01T04:20:00Z"),
        );
        assert_eq!(s.next_wake(), None);
    }
}
