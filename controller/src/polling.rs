//! Source polling: for a pipeline with `polling: {intervalSeconds: N}`, every N seconds
//! (at least the controller's `min_poll_interval`) each Source action's plugin runs its
//! `check` on a connected agent whose labels match the action's selector.
//!
//! The last revision per (pipeline, Source action) is kept in SQLite. The first check
//! only records it (like CodePipeline creating a pipeline, no run starts); a later check
//! that reports a revision other than the recorded one starts ONE execution, trigger
//! `PollForSourceChanges`, with the newest revision pinned for git sources, and records
//! it. Definitions are re-read every [`RELOAD_INTERVAL`]. A check no agent answers
//! within [`CHECK_TIMEOUT`] (an agent too old to know checks ignores them) is dropped
//! and tried again at the next interval.
//!
//! The recorded revision follows what runs started another way (by hand, a webhook, a
//! schedule) took, so polling starts runs only for revisions not run yet: before
//! starting one for a new revision, the store is asked whether an attempt of that Source
//! action succeeded with it (the revision is read from the output variable `CommitId`
//! for `git`, `Digest` for `directory`) after the recorded revision was written; if so,
//! the revision is recorded and nothing starts. If instead an attempt of the action is
//! queued or running (its revision not known yet), the decision waits for the next
//! interval. No engine hook is involved: the attempts already in the store say it all.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_pipeline::{Action, Category, Pipeline};
use sluice_proto::{CheckJob, ControllerMessage, SourceRevision};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::engine::{Engine, StartOptions};
use crate::schedules::Definitions;

/// How often the definitions are read again.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);
/// How long the controller waits for an agent's answer to a check.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the plugin's `check` may run on the agent (less than [`CHECK_TIMEOUT`]).
const PLUGIN_TIMEOUT_SECS: u64 = 45;
/// How often the task looks for due checks.
const TICK: Duration = Duration::from_millis(250);
/// The trigger type of executions polling starts.
pub const TRIGGER_TYPE: &str = "PollForSourceChanges";

type CheckOutcome = Result<Vec<SourceRevision>, String>;

/// Checks sent to agents, by check id, waiting for a result.
#[derive(Default)]
pub struct PendingChecks {
    waiting: Mutex<HashMap<String, oneshot::Sender<CheckOutcome>>>,
}

impl PendingChecks {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<CheckOutcome>>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn register(&self, check_id: &str) -> oneshot::Receiver<CheckOutcome> {
        let (tx, rx) = oneshot::channel();
        self.lock().insert(check_id.to_owned(), tx);
        rx
    }

    fn forget(&self, check_id: &str) {
        self.lock().remove(check_id);
    }

    /// Hands an agent's answer to the waiting poller; an unknown or late id is ignored.
    pub fn complete(&self, check_id: &str, result: CheckOutcome) {
        match self.lock().remove(check_id) {
            Some(tx) => {
                let _ = tx.send(result);
            }
            None => tracing::debug!(check = check_id, "Result of an unknown or expired check."),
        }
    }
}

/// What a check's result means for the recorded last revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing new.
    Nothing,
    /// First check, or a revision a run started another way already took: record this
    /// revision, start nothing.
    Record(String),
    /// A new revision, but a run of the Source action is queued or running: decide at
    /// the next interval, once it is known what that run took.
    Wait,
    /// A new revision: start a run with it and record it.
    Start(SourceRevision),
}

/// What the store says about runs of the polled Source action not started by this check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Runs {
    /// An attempt succeeded with the newest revision after polling last recorded one.
    pub ran: bool,
    /// An attempt is queued or running in an execution in progress.
    pub running: bool,
}

/// Decides from the recorded last revision and the revisions a check reported (oldest
/// first): only the newest one counts. `runs` is asked (about the newest revision) only
/// when that one is new to polling.
pub fn decide<E>(
    last: Option<&str>,
    revisions: &[SourceRevision],
    runs: impl FnOnce(&str) -> Result<Runs, E>,
) -> Result<Decision, E> {
    let Some(newest) = revisions.last() else {
        return Ok(Decision::Nothing);
    };
    Ok(match last {
        None => Decision::Record(newest.id.clone()),
        Some(last) if last == newest.id => Decision::Nothing,
        Some(_) => match runs(&newest.id)? {
            Runs { ran: true, .. } => Decision::Record(newest.id.clone()),
            Runs { running: true, .. } => Decision::Wait,
            Runs { .. } => Decision::Start(newest.clone()),
        },
    })
}

/// The output variable in which a Source provider reports the revision it took.
fn revision_variable(provider: &str) -> Option<&'static str> {
    match provider {
        "git" => Some("CommitId"),
        "directory" => Some("Digest"),
        _ => None,
    }
}

/// [`Runs`] of `action` with `revision`, from the store.
fn runs(
    engine: &Engine,
    pipeline: &str,
    action: &Action,
    revision: &str,
) -> crate::store::Result<Runs> {
    let store = engine.store();
    let ran = match revision_variable(&action.action_type_id.provider) {
        Some(variable) => store.ran_since_poll(pipeline, &action.name, variable, revision)?,
        None => false,
    };
    let running = !ran && store.source_running(pipeline, &action.name)?;
    Ok(Runs { ran, running })
}

/// What a poll-triggered execution records as its trigger detail.
pub fn trigger_detail(action: &str, revision: &SourceRevision) -> String {
    let short: String = revision.id.chars().take(12).collect();
    format!("{action} {short}: {}", revision.summary)
}

/// The Source actions of a pipeline that polling checks, and the interval.
fn polled(def: &Pipeline, min: Duration) -> Option<(Duration, Vec<&Action>)> {
    let polling = def.polling.as_ref()?;
    let interval = Duration::from_secs(u64::from(polling.interval_seconds)).max(min);
    let actions = def
        .stages
        .iter()
        .flat_map(|s| &s.actions)
        .filter(|a| a.action_type_id.category == Category::Source)
        .collect();
    Some((interval, actions))
}

type Key = (String, String);

/// Runs the poller until the task is aborted.
pub async fn run(engine: Arc<Engine>) {
    let mut definitions = Definitions::default();
    let mut current: Vec<(String, Arc<Pipeline>)> = Vec::new();
    let mut next_due: HashMap<Key, Instant> = HashMap::new();
    let in_flight: Arc<Mutex<HashSet<Key>>> = Arc::default();
    let mut warned: HashSet<Key> = HashSet::new();
    let mut reload_at = Instant::now();
    let min = engine.settings().min_poll_interval;
    loop {
        let now = Instant::now();
        if now >= reload_at {
            if let Some(fresh) = definitions.current(&engine) {
                current = fresh;
            }
            reload_at = now + RELOAD_INTERVAL;
        }
        let mut seen = HashSet::new();
        for (name, def) in &current {
            let Some((interval, actions)) = polled(def, min) else {
                continue;
            };
            for action in actions {
                let key = (name.clone(), action.name.clone());
                seen.insert(key.clone());
                if action.configuration.values().any(|v| v.contains("#{")) {
                    if warned.insert(key.clone()) {
                        tracing::warn!(pipeline = %name, action = %action.name, "Not polling a Source action whose configuration uses #{{...}} variables.");
                    }
                    continue;
                }
                let due = next_due.entry(key.clone()).or_insert(now);
                if *due > now || lock(&in_flight).contains(&key) {
                    continue;
                }
                *due = now + interval;
                lock(&in_flight).insert(key.clone());
                let engine = engine.clone();
                let in_flight = in_flight.clone();
                let (name, action) = (name.clone(), action.clone());
                tokio::spawn(async move {
                    poll_once(&engine, &name, &action).await;
                    lock(&in_flight).remove(&key);
                });
            }
        }
        next_due.retain(|k, _| seen.contains(k));
        warned.retain(|k| seen.contains(k));
        tokio::time::sleep(TICK).await;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One check of one Source action, and what follows from its result.
async fn poll_once(engine: &Engine, pipeline: &str, action: &Action) {
    let t = &action.action_type_id;
    let action_type = sluice_proto::ActionType {
        category: t.category.to_string(),
        owner: t.owner.clone(),
        provider: t.provider.clone(),
        version: t.version.clone(),
    };
    let registry = engine.registry();
    let Some(plugin) = registry.serving(&action_type) else {
        tracing::debug!(pipeline, action = %action.name, "No installed plugin serves the polled Source action.");
        return;
    };
    let secrets = match engine.job_secrets(plugin, &action.configuration) {
        Ok(secrets) => secrets,
        Err(e) => {
            tracing::warn!(pipeline, action = %action.name, error = %e, "Cannot poll the Source action.");
            return;
        }
    };
    let last = match engine.store().poll_revision(pipeline, &action.name) {
        Ok(last) => last,
        Err(e) => {
            tracing::warn!(pipeline, action = %action.name, error = %e, "Cannot read the last polled revision.");
            return;
        }
    };
    let check_id = hex::encode(rand::random::<[u8; 12]>());
    let job = CheckJob {
        check_id: check_id.clone(),
        pipeline: pipeline.to_owned(),
        action: action.name.clone(),
        plugin: plugin.job_ref(),
        configuration: action.configuration.clone(),
        secrets,
        last_revision: last.clone(),
        timeout_secs: PLUGIN_TIMEOUT_SECS,
    };
    let pending = engine.pending_checks();
    let answer = pending.register(&check_id);
    let Some(agent) = engine.send_to_agent(&action.agent, ControllerMessage::Check(Box::new(job)))
    else {
        pending.forget(&check_id);
        tracing::debug!(pipeline, action = %action.name, "No connected agent matches the polled Source action; skipping this round.");
        return;
    };
    let revisions = match tokio::time::timeout(CHECK_TIMEOUT, answer).await {
        Ok(Ok(Ok(revisions))) => revisions,
        Ok(Ok(Err(message))) => {
            tracing::warn!(pipeline, action = %action.name, agent, error = %message, "Source check failed.");
            return;
        }
        Ok(Err(_)) | Err(_) => {
            pending.forget(&check_id);
            tracing::warn!(pipeline, action = %action.name, agent, "No answer to a source check within {}s.", CHECK_TIMEOUT.as_secs());
            return;
        }
    };
    let decision = match decide(last.as_deref(), &revisions, |newest| {
        runs(engine, pipeline, action, newest)
    }) {
        Ok(decision) => decision,
        Err(e) => {
            tracing::warn!(pipeline, action = %action.name, error = %e, "Cannot read the runs of the polled Source action.");
            return;
        }
    };
    match decision {
        Decision::Nothing => {}
        Decision::Wait => {
            tracing::debug!(pipeline, action = %action.name, "A run of the polled Source action is in progress; deciding at the next interval.");
        }
        Decision::Record(revision) => {
            if last.is_some() {
                tracing::info!(pipeline, action = %action.name, revision = %revision, "A run started another way already took the newest revision; recording it without starting one.");
            }
            if let Err(e) = engine
                .store()
                .set_poll_revision(pipeline, &action.name, &revision)
            {
                tracing::warn!(pipeline, action = %action.name, error = %e, "Cannot record the polled revision.");
            }
        }
        Decision::Start(revision) => {
            let mut options = StartOptions::default();
            if action.action_type_id.provider == "git" {
                options
                    .source_revisions
                    .insert(action.name.clone(), revision.id.clone());
            }
            let detail = trigger_detail(&action.name, &revision);
            match engine.start_execution_with(pipeline, TRIGGER_TYPE, &detail, &options) {
                Ok((execution, _)) => {
                    tracing::info!(pipeline, execution = %execution.id, trigger = %detail, "Polling started an execution.");
                    if let Err(e) =
                        engine
                            .store()
                            .set_poll_revision(pipeline, &action.name, &revision.id)
                    {
                        tracing::warn!(pipeline, action = %action.name, error = %e, "Cannot record the polled revision.");
                    }
                }
                Err(e) => {
                    tracing::warn!(pipeline, trigger = %detail, error = %e, "Polling could not start an execution.");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn rev(id: &str) -> SourceRevision {
        SourceRevision {
            id: id.to_owned(),
            summary: format!("main at {id}: change"),
        }
    }

    const NONE: Runs = Runs {
        ran: false,
        running: false,
    };

    /// `decide` with these runs, checking it asks only about the newest revision.
    fn decide_with(last: Option<&str>, revisions: &[SourceRevision], runs: Runs) -> Decision {
        let newest = revisions.last().map(|r| r.id.clone());
        decide(last, revisions, |asked| {
            assert_eq!(Some(asked), newest.as_deref());
            Ok::<_, ()>(runs)
        })
        .unwrap()
    }

    #[test]
    fn the_first_check_records_and_a_new_newest_revision_starts_one_run() {
        assert_eq!(decide_with(None, &[], NONE), Decision::Nothing);
        assert_eq!(
            decide_with(None, &[rev("a")], NONE),
            Decision::Record("a".into())
        );
        assert_eq!(decide_with(Some("a"), &[], NONE), Decision::Nothing);
        assert_eq!(decide_with(Some("a"), &[rev("a")], NONE), Decision::Nothing);
        // Several new commits: one run, with the newest (the last, oldest first).
        assert_eq!(
            decide_with(Some("a"), &[rev("b"), rev("c")], NONE),
            Decision::Start(rev("c"))
        );
        // The runs are asked about only when a run would start.
        let unasked = |_: &str| -> Result<Runs, ()> { panic!("asked about runs") };
        assert_eq!(
            decide(None, &[rev("a")], unasked),
            Ok(Decision::Record("a".into()))
        );
        assert_eq!(
            decide(Some("a"), &[rev("a")], unasked),
            Ok(Decision::Nothing)
        );
        assert_eq!(decide(Some("a"), &[rev("b")], |_| Err("db")), Err("db"));
        assert_eq!(
            trigger_detail("Src", &rev("0123456789abcdef")),
            "Src 0123456789ab: main at 0123456789abcdef: change"
        );
    }

    #[test]
    fn a_revision_another_run_took_is_recorded_and_a_running_source_is_waited_for() {
        let ran = Runs {
            ran: true,
            running: false,
        };
        let running = Runs {
            ran: false,
            running: true,
        };
        let revisions = [rev("b"), rev("c")];
        assert_eq!(
            decide_with(Some("a"), &revisions, ran),
            Decision::Record("c".into())
        );
        assert_eq!(
            decide_with(
                Some("a"),
                &revisions,
                Runs {
                    ran: true,
                    ..running
                }
            ),
            Decision::Record("c".into())
        );
        assert_eq!(decide_with(Some("a"), &revisions, running), Decision::Wait);
        assert_eq!(revision_variable("git"), Some("CommitId"));
        assert_eq!(revision_variable("directory"), Some("Digest"));
        assert_eq!(revision_variable("s3"), None);
    }

    #[test]
    fn only_source_actions_are_polled_at_no_less_than_the_minimum() {
        let text = r#"name: p
polling: {intervalSeconds: 5}
stages:
  - name: S
    actions:
      - {name: A, actionTypeId: {category: Source, provider: directory}, configuration: {Path: /x}, outputArtifacts: [C]}
  - name: B
    actions:
      - {name: B, actionTypeId: {category: Build, provider: commands}, configuration: {Commands: x}, inputArtifacts: [C]}
"#;
        let def = sluice_pipeline::parse(text, None).unwrap().pipeline;
        let (interval, actions) = polled(&def, Duration::from_secs(30)).unwrap();
        assert_eq!(interval, Duration::from_secs(30));
        assert_eq!(actions.len(), 1);
        assert_eq!(actions[0].name, "A");
        let (interval, _) = polled(&def, Duration::from_secs(1)).unwrap();
        assert_eq!(interval, Duration::from_secs(5));
    }
}
