//! Sluice trigger extensions at the pipeline level: cron `schedules` evaluated in an IANA
//! time zone, and `watch`ed local directories. The model types, their checks (used by
//! [`crate::validate`]) and the next-fire computation the controller's scheduler uses.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use serde::{Deserialize, Serialize};

use crate::diag::{Path, Report};
use crate::model::{Category, Pipeline};

/// At most this many schedules, and this many watched directories, per pipeline.
pub const MAX_SCHEDULES: usize = 10;
/// At most this many watched directories per pipeline.
pub const MAX_WATCHES: usize = 10;
/// Debounce bounds for a watched directory, in seconds.
pub const DEBOUNCE_SECONDS: std::ops::RangeInclusive<u32> = 1..=600;

/// A cron schedule that starts the pipeline (Sluice extension).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Schedule {
    /// Standard 5-field cron (`minute hour day-of-month month day-of-week`), or 6 fields
    /// with seconds first.
    pub cron: String,
    /// IANA time zone the expression is evaluated in, e.g. `Europe/Berlin`.
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
    /// Pipeline variable overrides for the runs this schedule starts (declared names only).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variables: BTreeMap<String, String>,
}

pub(crate) fn default_time_zone() -> String {
    "UTC".to_owned()
}

/// A local directory whose changes start the pipeline (Sluice extension).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Watch {
    /// Absolute path of the directory, watched recursively on the controller's machine.
    pub path: String,
    /// The run starts once no change was seen for this long (1–600 s).
    #[serde(default = "default_debounce_seconds")]
    pub debounce_seconds: u32,
    /// The Source action that reads this directory; shown in the trigger detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_action_name: Option<String>,
}

pub(crate) fn default_debounce_seconds() -> u32 {
    2
}

/// Bounds of a polling interval, in seconds. The controller raises an interval below
/// its own minimum (30 s unless started with `--min-poll-interval`) to that minimum.
pub const POLL_INTERVAL_SECONDS: std::ops::RangeInclusive<u32> = 1..=86400;

/// Poll the Source actions' plugins (`check`) for new revisions (Sluice extension).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Polling {
    /// Seconds between two checks of each Source action.
    #[serde(default = "default_poll_interval_seconds")]
    pub interval_seconds: u32,
}

pub(crate) fn default_poll_interval_seconds() -> u32 {
    60
}

/// Parses a cron expression: 5 fields, or 6 with seconds first. Aliases such as
/// `@daily` are accepted too.
pub fn parse_cron(expression: &str) -> Result<Cron, String> {
    let fields = expression.split_whitespace().count();
    if !expression.trim_start().starts_with('@') && !(5..=6).contains(&fields) {
        return Err(format!(
            "{expression:?} has {fields} fields; write 5 (minute hour day-of-month month \
             day-of-week, e.g. \"0 3 * * 1-5\") or 6 with seconds first"
        ));
    }
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(expression)
        .map_err(|e| format!("{expression:?} is not a valid cron expression: {e}"))
}

/// Parses an IANA time zone name.
pub fn parse_time_zone(name: &str) -> Result<Tz, String> {
    name.parse::<Tz>().map_err(|_| {
        format!(
            "unknown time zone {name:?}; use an IANA name such as \"Europe/Berlin\", \
             \"America/New_York\" or \"UTC\""
        )
    })
}

/// The first time strictly after `after` at which `cron` fires in `zone`. `None` if it
/// never fires again (or the schedule is invalid).
pub fn next_fire(cron: &Cron, zone: Tz, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let local = after.with_timezone(&zone);
    cron.find_next_occurrence(&local, false)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

impl Schedule {
    /// The schedule's next fire time after `after`; `None` if invalid or never again.
    pub fn next_fire(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let cron = parse_cron(&self.cron).ok()?;
        let zone = parse_time_zone(&self.time_zone).ok()?;
        next_fire(&cron, zone, after)
    }
}

/// Checks `schedules` and `watch`.
pub(crate) fn check(pipeline: &Pipeline, report: &mut Report) {
    let root = Path::default();
    let path = root.key("schedules");
    let schedules = &pipeline.schedules;
    if schedules.len() > MAX_SCHEDULES {
        let found = schedules.len();
        report.push(
            &path,
            format!("a pipeline may have at most {MAX_SCHEDULES} schedules, found {found}"),
        );
    }
    let declared: HashSet<&str> = pipeline.variables.iter().map(|v| v.name.as_str()).collect();
    for (i, schedule) in schedules.iter().enumerate() {
        let path = path.index(i);
        if let Err(message) = parse_cron(&schedule.cron) {
            report.push(&path.key("cron"), message);
        }
        if let Err(message) = parse_time_zone(&schedule.time_zone) {
            report.push(&path.key("timeZone"), message);
        }
        for (name, value) in &schedule.variables {
            let path = path.key("variables").key(name);
            if !declared.contains(name.as_str()) {
                let mut names: Vec<&str> = declared.iter().copied().collect();
                names.sort_unstable();
                let known = if names.is_empty() {
                    "the pipeline declares no variables".to_owned()
                } else {
                    format!("declared: {}", names.join(", "))
                };
                report.push(
                    &path,
                    format!("{name:?} is not a pipeline variable; {known}"),
                );
            } else if value.chars().count() > 1000 {
                report.push(&path, "is longer than 1000 characters");
            }
        }
    }

    if let Some(polling) = &pipeline.polling
        && !POLL_INTERVAL_SECONDS.contains(&polling.interval_seconds)
    {
        report.push(
            &root.key("polling").key("intervalSeconds"),
            format!(
                "{} is out of range; use 1 to 86400 seconds (the controller polls no more \
                 often than its --min-poll-interval, 30 s by default)",
                polling.interval_seconds
            ),
        );
    }

    let path = root.key("watch");
    let watches = &pipeline.watch;
    if watches.len() > MAX_WATCHES {
        let found = watches.len();
        report.push(
            &path,
            format!("a pipeline may watch at most {MAX_WATCHES} directories, found {found}"),
        );
    }
    let sources: Vec<&str> = pipeline
        .stages
        .first()
        .map(|stage| {
            stage
                .actions
                .iter()
                .filter(|a| a.action_type_id.category == Category::Source)
                .map(|a| a.name.as_str())
                .collect()
        })
        .unwrap_or_default();
    let mut seen = HashSet::new();
    for (i, watch) in watches.iter().enumerate() {
        let path = path.index(i);
        if !std::path::Path::new(&watch.path).is_absolute() {
            report.push(
                &path.key("path"),
                format!(
                    "{:?} is a relative path; write an absolute path such as /srv/app",
                    watch.path
                ),
            );
        } else if !seen.insert(watch.path.as_str()) {
            report.push(
                &path.key("path"),
                format!("{:?} is watched twice; remove one", watch.path),
            );
        }
        if !DEBOUNCE_SECONDS.contains(&watch.debounce_seconds) {
            report.push(
                &path.key("debounceSeconds"),
                format!(
                    "{} is out of range; use 1 to 600 seconds",
                    watch.debounce_seconds
                ),
            );
        }
        if let Some(name) = &watch.source_action_name
            && !sources.contains(&name.as_str())
        {
            let known = if sources.is_empty() {
                "the first stage has no Source action".to_owned()
            } else {
                format!("Source actions: {}", sources.join(", "))
            };
            report.push(
                &path.key("sourceActionName"),
                format!("{name:?} is not a Source action of the first stage; {known}"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn fire(cron: &str, zone: &str, after: &str) -> DateTime<Utc> {
        next_fire(
            &parse_cron(cron).unwrap(),
            parse_time_zone(zone).unwrap(),
            utc(after),
        )
        .unwrap()
    }

    fn polled(polling: &str) -> Result<crate::Pipeline, String> {
        let text = format!(
            r#"name: p
polling: {polling}
stages:
  - name: S
    actions:
      - {{name: A, actionTypeId: {{category: Source, provider: directory}}, configuration: {{Path: /x}}, outputArtifacts: [C]}}
  - name: B
    actions:
      - {{name: B, actionTypeId: {{category: Build, provider: commands}}, configuration: {{Commands: x}}, inputArtifacts: [C]}}
"#
        );
        let pipeline = crate::parse(&text, None)
            .map_err(|e| e.to_string())?
            .pipeline;
        crate::validate(&pipeline, &crate::Catalog::builtin()).map_err(|e| e.to_string())?;
        Ok(pipeline)
    }

    #[test]
    fn polling_round_trips_and_its_interval_is_bounded() {
        let pipeline = polled("{intervalSeconds: 60}").unwrap();
        assert_eq!(
            pipeline.polling,
            Some(Polling {
                interval_seconds: 60
            })
        );
        let json = pipeline.to_json();
        assert!(json.contains("\"intervalSeconds\": 60"), "{json}");
        let back = crate::parse(&json, Some(crate::Format::Json))
            .unwrap()
            .pipeline;
        assert_eq!(back, pipeline);
        assert_eq!(polled("{}").unwrap().polling.unwrap().interval_seconds, 60);
        let error = polled("{intervalSeconds: 90000}").unwrap_err();
        assert!(error.contains("polling.intervalSeconds"), "{error}");
        assert!(polled("{intervalSeconds: 0}").is_err());
        let error = polled("{every: 3}").unwrap_err();
        assert!(error.contains("every"), "{error}");
    }

    #[test]
    fn fires_at_local_time_across_the_spring_dst_change() {
        // Europe/Berlin goes from UTC+1 to UTC+2 on Sunday 2024-03-31.
        let friday = fire("0 3 * * 1-5", "Europe/Berlin", "2024-03-29T01:00:00Z");
        assert_eq!(friday, utc("2024-03-29T02:00:00Z"));
        let monday = fire("0 3 * * 1-5", "Europe/Berlin", "2024-03-29T02:00:00Z");
        assert_eq!(monday, utc("2024-04-01T01:00:00Z"));
    }

    #[test]
    fn a_time_in_the_spring_gap_fires_once_right_after_it() {
        // 02:30 does not exist in Berlin on 2024-03-31: clocks jump from 02:00 to 03:00.
        let at = fire("30 2 * * *", "Europe/Berlin", "2024-03-30T12:00:00Z");
        assert_eq!(at, utc("2024-03-31T01:00:00Z"));
        let next = fire("30 2 * * *", "Europe/Berlin", "2024-03-31T01:00:00Z");
        assert_eq!(next, utc("2024-04-01T00:30:00Z"));
    }

    #[test]
    fn a_repeated_autumn_hour_fires_once() {
        // 02:30 happens twice in Berlin on 2024-10-27 (UTC+2, then UTC+1).
        let first = fire("30 2 * * *", "Europe/Berlin", "2024-10-26T12:00:00Z");
        assert_eq!(first, utc("2024-10-27T00:30:00Z"));
        let next = fire("30 2 * * *", "Europe/Berlin", "2024-10-27T00:30:00Z");
        assert_eq!(next, utc("2024-10-28T01:30:00Z"));
    }

    #[test]
    fn six_fields_fire_every_second_and_new_york_is_not_berlin() {
        let at = fire("* * * * * *", "UTC", "2024-01-01T00:00:00Z");
        assert_eq!(at, utc("2024-01-01T00:00:01Z"));
        let ny = fire("0 9 * * *", "America/New_York", "2024-03-10T00:00:00Z");
        // New York switched to EDT (UTC-4) on 2024-03-10 at 02:00.
        assert_eq!(ny, utc("2024-03-10T13:00:00Z"));
    }

    #[test]
    fn bad_expressions_and_zones_say_what_is_wrong() {
        let e = parse_cron("0 3 * *").unwrap_err();
        assert!(e.contains("has 4 fields"), "{e}");
        let e = parse_cron("61 3 * * *").unwrap_err();
        assert!(e.contains("not a valid cron expression"), "{e}");
        let e = parse_time_zone("Mars/Olympus").unwrap_err();
        assert!(e.contains("Europe/Berlin"), "{e}");
    }
}
