//! The directory watcher: starts pipelines when files change under their `watch`
//! directories (recursively, through `notify`), once the changes have been quiet for the
//! entry's `debounceSeconds`.
//!
//! Definitions are read again every [`crate::schedules::RELOAD_INTERVAL`]. A directory that
//! does not exist (yet) is retried at every reload. Changes seen while the controller was
//! down are not noticed.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use sluice_pipeline::Watch;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::engine::{Engine, StartOptions};
use crate::schedules::{Definitions, RELOAD_INTERVAL};

/// Collects changed paths until none arrived for the debounce period.
#[derive(Debug)]
pub struct Debouncer {
    quiet: Duration,
    changed: BTreeSet<PathBuf>,
    last: Option<Instant>,
}

impl Debouncer {
    /// A debouncer that fires after `quiet` without changes.
    pub fn new(quiet: Duration) -> Debouncer {
        Debouncer {
            quiet,
            changed: BTreeSet::new(),
            last: None,
        }
    }

    /// Records a change (of these paths) seen at `now`.
    pub fn record(&mut self, paths: impl IntoIterator<Item = PathBuf>, now: Instant) {
        self.changed.extend(paths);
        self.last = Some(now);
    }

    /// When the pending changes become due, if any are pending.
    pub fn deadline(&self) -> Option<Instant> {
        self.last.map(|last| last + self.quiet)
    }

    /// The changed paths, if the changes have been quiet long enough at `now`; clears them.
    pub fn take_due(&mut self, now: Instant) -> Option<BTreeSet<PathBuf>> {
        if self.deadline()? > now {
            return None;
        }
        self.last = None;
        Some(std::mem::take(&mut self.changed))
    }
}

/// Identifies one watched directory of one pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    pipeline: String,
    path: String,
    debounce_seconds: u32,
    source_action_name: Option<String>,
}

struct Watched {
    key: Key,
    debouncer: Debouncer,
    /// Dropping it stops the watch.
    _watcher: RecommendedWatcher,
}

/// What a directory-triggered execution records as its trigger detail.
pub fn trigger_detail(watch: &Watch, changed: usize) -> String {
    let files = if changed == 1 { "file" } else { "files" };
    let mut detail = format!("{changed} changed {files} under {}", watch.path);
    if let Some(action) = &watch.source_action_name {
        detail.push_str(&format!(" (source action {action})"));
    }
    detail
}

type Notice = (u64, notify::Result<notify::Event>);

/// Runs the watcher until the task is aborted.
pub async fn run(engine: Arc<Engine>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Notice>();
    let mut definitions = Definitions::default();
    let mut watched: HashMap<u64, Watched> = HashMap::new();
    let mut failed: HashSet<Key> = HashSet::new();
    let mut next_id = 0u64;
    let mut reload_at = Instant::now();
    loop {
        if Instant::now() >= reload_at {
            if let Some(current) = definitions.current(&engine) {
                let wanted: HashSet<Key> = current
                    .iter()
                    .flat_map(|(name, def)| {
                        def.watch.iter().map(move |w| Key {
                            pipeline: name.clone(),
                            path: w.path.clone(),
                            debounce_seconds: w.debounce_seconds,
                            source_action_name: w.source_action_name.clone(),
                        })
                    })
                    .collect();
                watched.retain(|_, w| wanted.contains(&w.key));
                failed.retain(|key| wanted.contains(key));
                let have: HashSet<Key> = watched.values().map(|w| w.key.clone()).collect();
                for key in wanted.into_iter().filter(|k| !have.contains(k)) {
                    next_id += 1;
                    let id = next_id;
                    let sender = tx.clone();
                    let started = notify::recommended_watcher(move |event| {
                        let _ = sender.send((id, event));
                    })
                    .and_then(|mut watcher| {
                        watcher.watch(std::path::Path::new(&key.path), RecursiveMode::Recursive)?;
                        Ok(watcher)
                    });
                    match started {
                        Ok(watcher) => {
                            tracing::info!(pipeline = %key.pipeline, path = %key.path, "Watching directory.");
                            failed.remove(&key);
                            let debouncer =
                                Debouncer::new(Duration::from_secs(key.debounce_seconds.into()));
                            watched.insert(
                                id,
                                Watched {
                                    key,
                                    debouncer,
                                    _watcher: watcher,
                                },
                            );
                        }
                        Err(e) => {
                            if failed.insert(key.clone()) {
                                tracing::warn!(pipeline = %key.pipeline, path = %key.path, error = %e, "Cannot watch directory; retrying.");
                            }
                        }
                    }
                }
            }
            reload_at = Instant::now() + RELOAD_INTERVAL;
        }

        let wake = watched
            .values()
            .filter_map(|w| w.debouncer.deadline())
            .fold(reload_at, Instant::min);
        tokio::select! {
            notice = rx.recv() => {
                if let Some((id, event)) = notice {
                    record(&mut watched, id, event);
                }
            }
            () = tokio::time::sleep_until(wake) => {}
        }

        let now = Instant::now();
        for w in watched.values_mut() {
            let Some(changed) = w.debouncer.take_due(now) else {
                continue;
            };
            let watch = Watch {
                path: w.key.path.clone(),
                debounce_seconds: w.key.debounce_seconds,
                source_action_name: w.key.source_action_name.clone(),
            };
            let detail = trigger_detail(&watch, changed.len());
            let pipeline = &w.key.pipeline;
            match engine.start_execution_with(
                pipeline,
                "DirectoryChange",
                &detail,
                &StartOptions::default(),
            ) {
                Ok((execution, _)) => {
                    tracing::info!(pipeline, execution = %execution.id, trigger = %detail, "Directory change started an execution.");
                }
                Err(e) => {
                    tracing::warn!(pipeline, trigger = %detail, error = %e, "Directory change could not start an execution.");
                }
            }
        }
    }
}

fn record(watched: &mut HashMap<u64, Watched>, id: u64, event: notify::Result<notify::Event>) {
    let Some(w) = watched.get_mut(&id) else {
        return; // a watch removed since
    };
    match event {
        Ok(event) if matches!(event.kind, EventKind::Access(_)) => {}
        Ok(event) => w.debouncer.record(event.paths, Instant::now()),
        Err(e) => {
            tracing::warn!(pipeline = %w.key.pipeline, path = %w.key.path, error = %e, "Watch error.");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn changes_fire_once_after_a_quiet_period() {
        let start = Instant::now();
        let s = |n: u64| start + Duration::from_millis(n);
        let mut d = Debouncer::new(Duration::from_secs(2));
        assert_eq!(d.deadline(), None);
        assert!(d.take_due(s(10_000)).is_none());
        // Five files written 300 ms apart: the deadline moves with each change.
        for i in 0..5u64 {
            d.record([PathBuf::from(format!("/w/f{i}"))], s(i * 300));
            assert_eq!(d.deadline(), Some(s(i * 300 + 2000)));
        }
        d.record([PathBuf::from("/w/f0")], s(1300)); // the same file again
        assert!(d.take_due(s(3299)).is_none());
        let changed = d.take_due(s(3300)).unwrap();
        assert_eq!(changed.len(), 5);
        // Nothing pending afterwards.
        assert_eq!(d.deadline(), None);
        assert!(d.take_due(s(9000)).is_none());
    }

    #[test]
    fn details_name_the_path_and_the_count() {
        let watch = Watch {
            path: "/srv/app".to_owned(),
            debounce_seconds: 2,
            source_action_name: Some("Snapshot".to_owned()),
        };
        assert_eq!(
            trigger_detail(&watch, 5),
            "5 changed files under /srv/app (source action Snapshot)"
        );
    }
}
