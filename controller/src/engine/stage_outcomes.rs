//! What happens around a stage's actions: its conditions (`beforeEntry`, `onSuccess`,
//! `onFailure`), the one automatic retry `onFailure` may start, and ROLLBACK executions.
//!
//! A condition's `VariableCheck` and `DeploymentWindow` rules are decided in the
//! controller, at once. Its `Commands` rules run on agents as attempts of the
//! `commands` plugin, named `condition:rule` and marked with the condition, so they
//! share the queue, leases, logs, stop and abandon with actions. While they run the
//! condition is InProgress; each pass of the engine looks at the current round of
//! runs (the highest attempt number) until all of them have ended.
//!
//! A rollback is a new execution of type ROLLBACK that runs one stage with the
//! artifacts and variables of an earlier execution that succeeded in it (its target).
//! It waits only for the stage to be free: not for a disabled inbound transition, nor
//! behind queued executions, and it evaluates no conditions.

use std::collections::BTreeMap;

use sluice_pipeline::conditions::{Kind, evaluate, runs_on_agent};
use sluice_pipeline::{
    Condition, ConditionResult, ExecutionMode, Pipeline, RetryMode, Rule, Stage,
};

use super::{EngineError, Event, Result, State, stage_position, substitute};
use crate::store::{self, AttemptRow, ExecutionRow, NewAttempt, StageRow, StoreError, phase};

/// Where a condition stands.
pub(super) enum ConditionOutcome {
    /// Commands rules are still running (`again`: one failed on the spot, so the
    /// engine should look again at once).
    Pending { again: bool },
    /// Every rule passed.
    Met(String),
    /// A rule did not pass: the condition's result applies.
    NotMet(ConditionResult, String),
}

/// The action type a Commands rule runs as.
pub(super) fn commands_rule_type() -> sluice_proto::ActionType {
    sluice_proto::ActionType {
        category: "Build".into(),
        owner: "Sluice".into(),
        provider: "commands".into(),
        version: "1".into(),
    }
}

/// The conditions of one kind in a stage.
fn conditions_of(stage: &Stage, kind: Kind) -> &[Condition] {
    let conditions = match kind {
        Kind::BeforeEntry => stage.before_entry.as_ref().map(|c| &c.conditions),
        Kind::OnSuccess => stage.on_success.as_ref().map(|c| &c.conditions),
        Kind::OnFailure => stage.on_failure.as_ref().map(|f| &f.conditions),
    };
    conditions.map_or(&[], Vec::as_slice)
}

/// The attempt name of a Commands rule run: `condition:rule`. Action names cannot
/// hold a colon, so the two never collide.
fn run_name(kind: Kind, rule: &Rule) -> String {
    format!("{}:{}", kind.as_str(), rule.name)
}

/// The Commands rule a rule run (`condition:rule`) belongs to.
pub(super) fn find_rule<'a>(stage: &'a Stage, kind: &str, run: &str) -> Option<&'a Rule> {
    let kind = Kind::parse(kind)?;
    let (_, name) = run.split_once(':')?;
    conditions_of(stage, kind)
        .iter()
        .flat_map(|c| &c.rules)
        .find(|r| r.name == name && runs_on_agent(r))
}

impl super::Engine {
    /// Evaluates a stage's condition of one kind (a fresh evaluation, or one whose
    /// Commands rules are running); every rule must pass. A met condition is recorded
    /// as Succeeded here; what a pending or unmet one means is the caller's to say.
    pub(super) fn condition_outcome(
        &self,
        st: &mut State,
        execution: &ExecutionRow,
        def: &Pipeline,
        row: &StageRow,
        kind: Kind,
        conditions: &[Condition],
    ) -> Result<ConditionOutcome> {
        let outcome = self.evaluate_condition(st, execution, def, row, kind, conditions)?;
        if let ConditionOutcome::Met(summary) = &outcome {
            let stage = &def.stages[row.stage_index as usize].name;
            self.record_condition(execution, stage, row, kind, "Succeeded", summary)?;
        }
        Ok(outcome)
    }

    fn evaluate_condition(
        &self,
        st: &mut State,
        execution: &ExecutionRow,
        def: &Pipeline,
        row: &StageRow,
        kind: Kind,
        conditions: &[Condition],
    ) -> Result<ConditionOutcome> {
        let Some(condition) = conditions.first() else {
            return Ok(ConditionOutcome::Met(format!(
                "{} has no condition",
                kind.as_str()
            )));
        };
        let stage = &def.stages[row.stage_index as usize];
        let (status, summary) = match kind {
            Kind::BeforeEntry => (&row.condition_status, &row.summary),
            Kind::OnSuccess => (&row.on_success_status, &row.on_success_summary),
            Kind::OnFailure => (&row.on_failure_status, &row.on_failure_summary),
        };
        let not_met = |rule: &Rule, why: &str| {
            ConditionOutcome::NotMet(
                condition.result,
                format!(
                    "{} condition of stage {} not met (result {}): rule {} ({}) failed: {why}",
                    kind.as_str(),
                    stage.name,
                    condition.result.as_str(),
                    rule.name,
                    rule.rule_type_id.provider
                ),
            )
        };
        let remote: Vec<&Rule> = condition
            .rules
            .iter()
            .filter(|r| runs_on_agent(r))
            .collect();

        if status.as_deref() != Some("InProgress") {
            // A fresh evaluation: the controller's own rules first, at once.
            let needs_outputs = condition
                .rules
                .iter()
                .filter_map(|r| r.configuration.get("Variable"))
                .any(|v| !v.contains("#{variables.") && !v.contains("#{codepipeline."));
            let namespaces = self.namespaces(execution, def, needs_outputs);
            let resolve = |namespace: &str, name: &str| -> std::result::Result<String, String> {
                let namespaces = namespaces.as_ref().map_err(Clone::clone)?;
                substitute(&format!("#{{{namespace}.{name}}}"), namespaces)
            };
            let now = chrono::Utc::now();
            let mut passed = Vec::new();
            for rule in condition.rules.iter().filter(|r| !runs_on_agent(r)) {
                match evaluate(rule, &resolve, now) {
                    Ok(why) => passed.push(format!(
                        "rule {} ({}) passed: {why}",
                        rule.name, rule.rule_type_id.provider
                    )),
                    Err(why) => return Ok(not_met(rule, &why)),
                }
            }
            if remote.is_empty() {
                return Ok(ConditionOutcome::Met(format!(
                    "{} condition met: {}",
                    kind.as_str(),
                    passed.join("; ")
                )));
            }
            // Then the Commands rules, on agents: a new round of runs.
            let round = self
                .store
                .attempts(&execution.id)?
                .iter()
                .filter(|a| {
                    a.stage_index == row.stage_index
                        && a.rule_condition.as_deref() == Some(kind.as_str())
                })
                .map(|a| a.attempt)
                .max()
                .unwrap_or(0)
                + 1;
            let names: Vec<&str> = remote.iter().map(|r| r.name.as_str()).collect();
            let mut waiting = format!(
                "{} condition: rule {} running on an agent",
                kind.as_str(),
                names.join(", ")
            );
            for part in &passed {
                waiting.push_str("; ");
                waiting.push_str(part);
            }
            self.store.set_stage_condition(
                &execution.id,
                row.stage_index,
                kind.as_str(),
                "InProgress",
                &waiting,
            )?;
            let mut again = false;
            for rule in remote {
                again |= self.queue_rule(st, execution, def, row.stage_index, kind, rule, round)?;
            }
            return Ok(ConditionOutcome::Pending { again });
        }

        // Commands rules are running: decide once all of this round's runs ended.
        let runs: Vec<AttemptRow> = self
            .store
            .attempts(&execution.id)?
            .into_iter()
            .filter(|a| {
                a.stage_index == row.stage_index
                    && a.rule_condition.as_deref() == Some(kind.as_str())
            })
            .collect();
        let round = runs.iter().map(|a| a.attempt).max().unwrap_or(0);
        let mut passed = Vec::new();
        let mut first_failure = None;
        for rule in &remote {
            let name = run_name(kind, rule);
            let Some(run) = runs
                .iter()
                .find(|a| a.attempt == round && a.action_name == name)
            else {
                // A run that was never queued (a restart in between): queue it now.
                let again =
                    self.queue_rule(st, execution, def, row.stage_index, kind, rule, round)?;
                return Ok(ConditionOutcome::Pending { again });
            };
            if run.phase != phase::DONE {
                return Ok(ConditionOutcome::Pending { again: false });
            }
            if run.status == "Succeeded" {
                let agent = run.agent_id.as_deref().unwrap_or("an agent");
                passed.push(format!(
                    "rule {} (Commands) passed on {agent} (attempt {})",
                    rule.name, run.id
                ));
            } else if first_failure.is_none() {
                let why = format!(
                    "{} (its log: `sluice logs {} --action {}/{}`)",
                    run.error.as_deref().unwrap_or("no reason given"),
                    execution.id,
                    stage.name,
                    run.action_name
                );
                first_failure = Some(not_met(rule, &why));
            }
        }
        if let Some(failure) = first_failure {
            return Ok(failure);
        }
        // The controller's rules passed when the round started; their words follow.
        let earlier = summary
            .as_deref()
            .and_then(|s| s.split_once("; "))
            .map(|(_, rest)| format!("; {rest}"))
            .unwrap_or_default();
        Ok(ConditionOutcome::Met(format!(
            "{} condition met: {}{earlier}",
            kind.as_str(),
            passed.join("; ")
        )))
    }

    /// Creates and queues the run of a Commands rule. Returns true if it failed on the
    /// spot (a reference that cannot be resolved, a missing plugin or input).
    #[allow(clippy::too_many_arguments)]
    fn queue_rule(
        &self,
        st: &mut State,
        execution: &ExecutionRow,
        def: &Pipeline,
        stage_index: i64,
        kind: Kind,
        rule: &Rule,
        round: i64,
    ) -> Result<bool> {
        let needs_outputs = rule.commands.iter().any(|c| c.contains("#{"));
        let resolved = self
            .namespaces(execution, def, needs_outputs)
            .and_then(|ns| {
                rule.commands
                    .iter()
                    .enumerate()
                    .map(|(i, c)| substitute(c, &ns).map_err(|e| format!("commands[{i}]: {e}")))
                    .collect::<std::result::Result<Vec<_>, _>>()
            });
        let (commands, problem) = match resolved {
            Ok(lines) => (lines, None),
            Err(problem) => (rule.commands.clone(), Some(problem)),
        };
        let configuration = BTreeMap::from([("Commands".to_string(), commands.join("\n"))]);
        let token = super::new_token();
        let name = run_name(kind, rule);
        let id = self.store.insert_attempt(&NewAttempt {
            execution_id: &execution.id,
            stage_index,
            action_name: &name,
            attempt: round,
            run_order: 0,
            fencing_token: &token,
            resolved_configuration: &configuration,
            rule_condition: Some(kind.as_str()),
        })?;
        self.emit(Event::Execution(execution.id.clone()));
        if let Some(problem) = problem {
            self.store.end_attempt(id, &token, "Failed", &problem)?;
            return Ok(true);
        }
        self.enqueue_existing(st, &self.store.attempt(id)?)
    }

    /// Records how a condition went and tells the log.
    pub(super) fn record_condition(
        &self,
        execution: &ExecutionRow,
        stage_name: &str,
        row: &StageRow,
        kind: Kind,
        status: &str,
        summary: &str,
    ) -> Result<()> {
        self.store.set_stage_condition(
            &execution.id,
            row.stage_index,
            kind.as_str(),
            status,
            summary,
        )?;
        tracing::info!(execution = %execution.id, stage = %stage_name, condition = kind.as_str(), status, summary, "Stage condition evaluated.");
        self.emit(Event::Execution(execution.id.clone()));
        Ok(())
    }

    /// A stage's actions failed (`message` says which and why). onFailure may retry it
    /// once, or roll it back; otherwise the stage and the execution fail. Returns true
    /// if the engine should look at the execution again.
    pub(super) fn stage_failed(
        &self,
        st: &mut State,
        execution: &ExecutionRow,
        def: &Pipeline,
        row: &StageRow,
        message: &str,
    ) -> Result<bool> {
        let index = row.stage_index;
        let stage = &def.stages[index as usize];
        let on_failure = stage
            .on_failure
            .as_ref()
            .filter(|_| execution.rollback_stage.is_none());
        let mut message = message.to_string();
        if let Some(on_failure) = on_failure {
            let kind = Kind::OnFailure;
            match on_failure.result {
                ConditionResult::Retry if row.auto_retries == 0 => {
                    let mode = on_failure
                        .retry_configuration
                        .map(|c| c.retry_mode)
                        .unwrap_or_default();
                    self.reopen_stage(
                        st,
                        execution,
                        def,
                        index,
                        mode == RetryMode::AllActions,
                        true,
                    )?;
                    let summary =
                        format!("retried automatically ({}) after: {message}", mode.as_str());
                    self.record_condition(
                        execution,
                        &stage.name,
                        row,
                        kind,
                        "Succeeded",
                        &summary,
                    )?;
                    return Ok(true);
                }
                ConditionResult::Retry => {
                    message.push_str("; it had already been retried automatically once");
                }
                ConditionResult::Rollback
                    if matches!(row.on_failure_status.as_deref(), None | Some("InProgress")) =>
                {
                    // Evaluated without recording: what is recorded below says
                    // whether it rolled back, once.
                    let outcome = if on_failure.conditions.is_empty() {
                        ConditionOutcome::Met("onFailure has no condition".into())
                    } else {
                        self.evaluate_condition(
                            st,
                            execution,
                            def,
                            row,
                            kind,
                            &on_failure.conditions,
                        )?
                    };
                    match outcome {
                        ConditionOutcome::Pending { again } => return Ok(again),
                        ConditionOutcome::Met(summary) => {
                            self.store.finish_stage(&execution.id, index, "Failed")?;
                            let rollback = self.roll_back_after(st, execution, def, index)?;
                            let summary = format!("{summary}{rollback}");
                            self.record_condition(
                                execution,
                                &stage.name,
                                row,
                                kind,
                                "Succeeded",
                                &summary,
                            )?;
                            message.push_str(&rollback);
                            self.finish_execution(&execution.id, "Failed", Some(&message))?;
                            return Ok(false);
                        }
                        ConditionOutcome::NotMet(_, summary) => {
                            let summary = format!("not rolled back: {summary}");
                            self.record_condition(
                                execution,
                                &stage.name,
                                row,
                                kind,
                                "Failed",
                                &summary,
                            )?;
                            message.push_str("; ");
                            message.push_str(&summary);
                        }
                    }
                }
                _ => {}
            }
        }
        self.store.finish_stage(&execution.id, index, "Failed")?;
        self.finish_execution(&execution.id, "Failed", Some(&message))?;
        Ok(false)
    }

    /// Puts a failed stage back in progress: ALL_ACTIONS runs it again from its first
    /// runOrder; FAILED_ACTIONS queues again the actions whose latest attempt failed
    /// or was abandoned. Every earlier attempt is kept.
    pub(super) fn reopen_stage(
        &self,
        st: &mut State,
        execution: &ExecutionRow,
        def: &Pipeline,
        index: i64,
        all_actions: bool,
        automatic: bool,
    ) -> Result<()> {
        let id = &execution.id;
        let attempts: Vec<AttemptRow> = self
            .store
            .attempts(id)?
            .into_iter()
            .filter(|a| a.stage_index == index && a.rule_condition.is_none())
            .collect();
        let highest = attempts.iter().map(|a| a.attempt).max().unwrap_or(0);
        let floor = self
            .store
            .stages(id)?
            .iter()
            .find(|s| s.stage_index == index)
            .map_or(0, |s| s.attempt_floor);
        if all_actions {
            self.store.reopen_for_retry(id, index, highest, automatic)?;
            return Ok(());
        }
        self.store.reopen_for_retry(id, index, floor, automatic)?;
        let execution = self.store.execution(id)?;
        for action in &def.stages[index as usize].actions {
            let latest = attempts
                .iter()
                .filter(|a| a.action_name == action.name && a.attempt > floor)
                .max_by_key(|a| a.attempt);
            if let Some(latest) = latest
                && matches!(latest.status.as_str(), "Failed" | "Abandoned")
            {
                self.queue_attempt(st, &execution, def, index, action, latest.attempt + 1)?;
            }
        }
        Ok(())
    }

    /// Starts the automatic rollback of a stage that failed in `execution`, to the
    /// newest earlier execution that succeeded in it. Returns words for the failed
    /// execution's summary: what was rolled back, or why nothing was.
    pub(super) fn roll_back_after(
        &self,
        st: &mut State,
        execution: &ExecutionRow,
        def: &Pipeline,
        index: i64,
    ) -> Result<String> {
        let stage = &def.stages[index as usize].name;
        let current = self.store.current_version(&execution.pipeline_name)?;
        if current != execution.pipeline_version {
            return Ok(format!(
                "; not rolled back: pipeline {} is now at version {current}, and a rollback goes \
                 only to an execution of the current version",
                execution.pipeline_name
            ));
        }
        let Some(target) = self.store.last_succeeded_in_stage(
            &execution.pipeline_name,
            execution.pipeline_version,
            index,
            Some(execution.seq),
        )?
        else {
            return Ok(format!(
                "; not rolled back: no earlier execution of version {} succeeded in stage {stage}",
                execution.pipeline_version
            ));
        };
        let detail = format!("stage {stage} of execution {} failed", execution.id);
        let rollback = self.create_rollback(st, &target, index, "AutomatedRollback", &detail)?;
        Ok(format!(
            "; rolling back stage {stage} to execution {} with execution {rollback}",
            target.id
        ))
    }

    /// Records a ROLLBACK execution of one stage to `target` and lets it start.
    fn create_rollback(
        &self,
        st: &mut State,
        target: &ExecutionRow,
        index: i64,
        trigger_type: &str,
        trigger_detail: &str,
    ) -> Result<String> {
        let id = uuid::Uuid::new_v4().to_string();
        self.store.insert_execution(
            &id,
            &target.pipeline_name,
            target.pipeline_version,
            &store::NewExecution {
                trigger_type,
                trigger_detail,
                variables: target.variables.clone(),
                source_revisions: target.source_revisions.clone(),
                client_request_token: None,
                rollback: Some((&target.id, index)),
            },
        )?;
        tracing::info!(execution = %id, target = %target.id, stage = index, trigger_type, "Rollback started.");
        self.emit(Event::Execution(id.clone()));
        self.advance_one(st, &id)?;
        Ok(id)
    }

    /// Rolls a stage back by hand (CodePipeline's RollbackStage): a new ROLLBACK
    /// execution runs the stage with the artifacts and variables of `target`, or of
    /// the newest execution that succeeded in the stage before the latest one to enter it.
    pub fn rollback_stage(
        &self,
        pipeline: &str,
        stage_name: &str,
        target: Option<&str>,
        who: &str,
    ) -> Result<ExecutionRow> {
        let mut st = self.lock();
        let version = self.store.current_version(pipeline)?;
        let def = self.definition(&mut st, pipeline, version)?;
        let index = stage_position(&def, version, stage_name)? as i64;
        let conflict = |m: String| -> EngineError { StoreError::Conflict(m).into() };
        if def.execution_mode == ExecutionMode::Parallel {
            return Err(conflict(format!(
                "pipeline {pipeline} runs PARALLEL executions, which cannot roll back a stage, as \
                 in CodePipeline"
            )));
        }
        if index == 0 {
            return Err(conflict(format!(
                "stage {stage_name} is the first stage: it has no earlier stage whose artifacts a \
                 rollback could reuse"
            )));
        }
        if let Some(occupant) = self.store.stage_occupant(pipeline, stage_name, "")? {
            return Err(conflict(format!(
                "stage {stage_name} is in progress in execution {occupant}; roll it back once that \
                 has ended (or stop it: `sluice execution stop {occupant}`)"
            )));
        }
        let target = match target {
            Some(id) => {
                let t = self.store.execution(id)?;
                let succeeded = self
                    .store
                    .stages(id)?
                    .iter()
                    .any(|s| s.stage_index == index && s.status == "Succeeded");
                let problem = if t.pipeline_name != pipeline {
                    Some(format!(
                        "it is an execution of pipeline {}",
                        t.pipeline_name
                    ))
                } else if t.execution_type != "STANDARD" {
                    Some(
                        "it is itself a ROLLBACK; choose the STANDARD execution it went back to"
                            .into(),
                    )
                } else if t.pipeline_version != version {
                    Some(format!(
                        "it ran version {} and the pipeline is now at version {version}; a rollback \
                         goes only to an execution of the current version",
                        t.pipeline_version
                    ))
                } else if !succeeded {
                    Some(format!("stage {stage_name} did not succeed in it"))
                } else {
                    None
                };
                if let Some(problem) = problem {
                    return Err(conflict(format!(
                        "cannot roll stage {stage_name} back to execution {id}: {problem}"
                    )));
                }
                t
            }
            None => {
                let newest = self.store.newest_in_stage(pipeline, index)?;
                self.store
                    .last_succeeded_in_stage(pipeline, version, index, newest.map(|e| e.seq))?
                    .ok_or_else(|| {
                        conflict(format!(
                            "no execution of version {version} succeeded in stage {stage_name} \
                             before the latest one to enter it, so there is nothing to roll back \
                             to; name one with --target"
                        ))
                    })?
            }
        };
        let id = self.create_rollback(&mut st, &target, index, "ManualRollback", who)?;
        self.dispatch(&mut st)?;
        drop(st);
        self.emit(Event::Execution(id.clone()));
        Ok(self.store.execution(&id)?)
    }
}
