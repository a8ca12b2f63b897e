// One execution in detail: what started it and how it went, a timeline of its stages,
// actions and attempts, each attempt's configuration, variables, artifacts, tests,
// approval and condition rule runs, and the log of the attempt chosen
// (`#/executions/ID?attempt=AID&line=N`). Updates arrive through the event stream.
import { html, useEffect, useMemo, useState } from '../vendor/preact-htm.js';
import { api, followEvents } from '../api.js';
import { Status, ago, duration, label, look, when } from '../status.js';
import { LogView } from '../log.js';

const enc = encodeURIComponent;
const RUNNING = ['InProgress', 'Stopping'];

/** The execution, reloaded when its events arrive; the pipeline version it runs. */
function useExecution(id) {
  const [state, setState] = useState({ loading: true });
  useEffect(() => {
    let closed = false;
    let stop = () => {};
    let timer = null;
    const load = async () => {
      try {
        const execution = await api(`/api/v1/executions/${enc(id)}`);
        if (!closed) setState((s) => ({ ...s, loading: false, error: '', execution }));
      } catch (e) {
        if (!closed) setState((s) => ({ ...s, loading: false, error: e.message }));
      }
    };
    const soon = () => {
      if (!timer) timer = setTimeout(() => { timer = null; load(); }, 250);
    };
    // Follow from the latest event id first, so nothing that happens while the
    // execution loads is missed. (Kept open once it ends: a retry restarts it.)
    api('/api/v1/events/latest')
      .then((latest) => {
        if (closed) return undefined;
        stop = followEvents({ execution: id, since: latest.id }, soon, soon);
        return load();
      })
      .catch((e) => { if (!closed) setState({ loading: false, error: e.message }); });
    return () => { closed = true; stop(); clearTimeout(timer); };
  }, [id]);

  // The definition of the version it runs: which artifacts each action takes.
  const name = state.execution?.pipelineName;
  const version = state.execution?.pipelineVersion;
  const [definition, setDefinition] = useState(null);
  useEffect(() => {
    if (!name) return undefined;
    let closed = false;
    api(`/api/v1/pipelines/${enc(name)}?version=${enc(version)}`).then(
      (p) => { if (!closed) setDefinition(p.definition); },
      () => { if (!closed) setDefinition(null); },
    );
    return () => { closed = true; };
  }, [name, version]);
  return { ...state, definition };
}

/** Re-renders every second while `on` (running durations and bars grow). */
function useTick(on) {
  const [, setNow] = useState(0);
  useEffect(() => {
    if (!on) return undefined;
    const timer = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(timer);
  }, [on]);
}

const names = (list) => (list || []).map((a) => (typeof a === 'string' ? a : a.name));

function artifactUrl(executionId, name) {
  return `/api/v1/executions/${enc(executionId)}/artifacts/${enc(name)}`;
}

function size(bytes) {
  if (bytes == null) return '';
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1 << 20) return `${(bytes / 1024).toFixed(1)} KB`;
  if (bytes < 1 << 30) return `${(bytes / (1 << 20)).toFixed(1)} MB`;
  return `${(bytes / (1 << 30)).toFixed(2)} GB`;
}

function ms(n) {
  if (n == null) return '';
  return n < 1000 ? `${n} ms` : `${(n / 1000).toFixed(n < 10000 ? 2 : 1)} s`;
}

/** Every attempt of the execution, actions' and rule runs', with where it belongs. */
function allAttempts(execution) {
  const out = [];
  for (const stage of execution.stages) {
    for (const action of stage.actions) for (const a of action.attempts) out.push({ stage, action, attempt: a });
    for (const r of stage.ruleRuns || []) out.push({ stage, action: null, attempt: r });
  }
  return out;
}

/** The attempt whose log to show when the address names none: a failure, else a running one. */
function defaultAttempt(attempts) {
  const failed = attempts.filter((x) => x.attempt.status === 'Failed');
  if (failed.length) return failed[failed.length - 1];
  const running = attempts.filter((x) => x.attempt.status === 'InProgress' && x.attempt.startedAtMs);
  return running.length ? running[running.length - 1] : null;
}

// ---- timeline ----------------------------------------------------------------------

const STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400].map((s) => s * 1000);

function offsetLabel(t) {
  const s = Math.round(t / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return s % 60 ? `${m}m${s % 60}s` : `${m}m`;
  return `${Math.floor(m / 60)}h${m % 60 ? `${m % 60}m` : ''}`;
}

function Bar({ start, end, status, t0, span, title, onClick, test, attemptId, selected }) {
  const [tone, icon] = look(status);
  const left = ((start - t0) / span) * 100;
  const width = Math.max(0, ((end - start) / span) * 100);
  const text = `${label(status)} · ${duration(start, end)}`;
  const props = {
    class: `tl-bar tone-${tone}${selected ? ' selected' : ''}`,
    style: { left: `${left}%`, width: `${width}%` },
    title,
    'data-test': test,
    'data-status': status || 'Waiting',
    'data-attempt': attemptId,
  };
  const body = html`<span class="icon" aria-hidden="true">${icon}</span><span class="tl-text">${text}</span>`;
  return onClick
    ? html`<button type="button" ...${props} aria-label=${title} aria-pressed=${selected ? 'true' : 'false'} onClick=${onClick}>${body}</button>`
    : html`<span ...${props} role="img" aria-label=${title}>${body}</span>`;
}

function AttemptBars({ attempt, where, t0, span, now, selected, onSelect }) {
  const a = attempt;
  const end = a.finishedAtMs || now;
  const bars = [];
  if (a.queuedAtMs && (a.startedAtMs || !a.finishedAtMs) && (a.startedAtMs || now) > a.queuedAtMs) {
    const queuedEnd = a.startedAtMs || now;
    bars.push(html`<span class="tl-queued" style=${{ left: `${((a.queuedAtMs - t0) / span) * 100}%`, width: `${((queuedEnd - a.queuedAtMs) / span) * 100}%` }}
      title=${`${where}: waited ${duration(a.queuedAtMs, queuedEnd)}${a.waitingReason ? ` (${a.waitingReason})` : ''}`}
      data-test="timeline-queued"><span class="sr-only">queued ${duration(a.queuedAtMs, queuedEnd)}</span></span>`);
  }
  const start = a.startedAtMs || a.finishedAtMs;
  if (start) {
    const title = `${where}, attempt ${a.attempt}: ${label(a.status)}, ${duration(start, end)} (${when(start)}${a.finishedAtMs ? ` – ${new Date(a.finishedAtMs).toLocaleTimeString()}` : ', running'})`;
    bars.push(html`<${Bar} start=${start} end=${end} status=${a.status} t0=${t0} span=${span} title=${title}
      test="timeline-attempt" attemptId=${a.id} selected=${selected} onClick=${() => onSelect(a.id)} />`);
  }
  return bars;
}

function Timeline({ execution, selectedId, onSelect }) {
  const now = Date.now();
  const t0 = execution.startedAtMs;
  let last = execution.finishedAtMs || now;
  for (const { attempt } of allAttempts(execution)) last = Math.max(last, attempt.finishedAtMs || (attempt.startedAtMs ? now : 0));
  for (const s of execution.stages) last = Math.max(last, s.finishedAtMs || 0);
  const span = Math.max(last - t0, 1000);
  const step = STEPS.find((s) => span / s <= 8) || STEPS[STEPS.length - 1];
  const ticks = [];
  // No tick so close to the end that its label would not fit.
  for (let t = 0; t <= span * 0.94; t += step) ticks.push(t);
  const running = RUNNING.includes(execution.status);
  const rows = [];
  execution.stages.forEach((stage, index) => {
    const stageEnd = stage.finishedAtMs || (stage.startedAtMs ? now : 0);
    rows.push(html`<div class="tl-row tl-stage" data-test="timeline-row" data-kind="stage" data-name=${stage.name} key=${`s${index}`}>
      <div class="tl-label" title=${stage.name}>${stage.name}</div>
      <div class="tl-track">${stage.startedAtMs
        ? html`<${Bar} start=${stage.startedAtMs} end=${stageEnd} status=${stage.status} t0=${t0} span=${span} test="timeline-stage"
            title=${`Stage ${stage.name}: ${label(stage.status)}, ${duration(stage.startedAtMs, stage.finishedAtMs)}`} />`
        : html`<span class="tl-none muted small">${label(stage.status)}</span>`}</div>
    </div>`);
    for (const run of stage.ruleRuns || []) {
      rows.push(html`<div class="tl-row tl-action tl-rule" data-test="timeline-row" data-kind="rule" key=${`r${run.id}`}>
        <div class="tl-label" title=${`${stage.name}: ${run.ruleCondition} rule`}>${run.ruleCondition} rule</div>
        <div class="tl-track"><${AttemptBars} attempt=${run} where=${`${stage.name} ${run.ruleCondition} rule`} t0=${t0} span=${span} now=${now}
          selected=${run.id === selectedId} onSelect=${onSelect} /></div>
      </div>`);
    }
    for (const action of stage.actions) {
      rows.push(html`<div class="tl-row tl-action" data-test="timeline-row" data-kind="action" data-name=${action.name} key=${`a${index}-${action.name}`}>
        <div class="tl-label" title=${`${stage.name} › ${action.name}`}>${action.name}</div>
        <div class="tl-track">${action.attempts.length
          ? action.attempts.map((a) => html`<${AttemptBars} attempt=${a} where=${`${stage.name} › ${action.name}`} t0=${t0} span=${span} now=${now}
              selected=${a.id === selectedId} onSelect=${onSelect} />`)
          : html`<span class="tl-none muted small">${label(action.status)}</span>`}</div>
      </div>`);
    }
  });
  return html`<section class="card timeline" data-test="timeline" aria-labelledby="timeline-title">
    <h2 id="timeline-title">Timeline</h2>
    <div class="tl-scroll">
      <div class="tl-grid">
        <div class="tl-row tl-axis" aria-hidden="true">
          <div class="tl-label muted small">${when(t0)}</div>
          <div class="tl-track">
            ${ticks.map((t) => html`<span class="tl-tick" style=${{ left: `${(t / span) * 100}%` }}>+${offsetLabel(t)}</span>`)}
          </div>
        </div>
        ${rows}
        ${running && html`<div class="tl-now-row" aria-hidden="true"><div class="tl-label"></div>
          <div class="tl-track"><span class="tl-now" style=${{ left: `${((now - t0) / span) * 100}%` }}>now</span></div></div>`}
      </div>
    </div>
    <p class="muted small">Bars run from the execution's start (${when(t0)}); hatched parts are time spent waiting for an agent. Choose a bar to see its attempt's log.</p>
  </section>`;
}

// ---- details -----------------------------------------------------------------------

function KeyValues({ values, test, empty }) {
  const entries = Object.entries(values || {});
  if (!entries.length) return html`<p class="muted small">${empty}</p>`;
  return html`<table class="kv" data-test=${test}>
    <tbody>${entries.map(([k, v]) => html`<tr key=${k}><th scope="row"><code>${k}</code></th><td><code class="value">${v}</code></td></tr>`)}</tbody>
  </table>`;
}

function ArtifactLink({ execution, name }) {
  const own = execution.artifacts.find((a) => a.name === name);
  if (own) {
    return html`<a href=${artifactUrl(execution.id, name)} download=${`${name}.tar`} data-test="artifact-download">${name}.tar</a>
      <span class="muted small"> ${size(own.size)} · sha256 <code title=${own.sha256}>${own.sha256.slice(0, 12)}</code></span>`;
  }
  if (execution.rollbackTarget) {
    return html`<a href=${artifactUrl(execution.rollbackTarget, name)} download=${`${name}.tar`} data-test="artifact-download">${name}.tar</a>
      <span class="muted small"> from execution <a href=${`#/executions/${enc(execution.rollbackTarget)}`}><code>${execution.rollbackTarget.slice(0, 8)}</code></a></span>`;
  }
  return html`<span>${name}</span> <span class="muted small">not produced</span>`;
}

function Artifacts({ execution, attempt, declared }) {
  const inputs = names(declared?.inputArtifacts);
  const produced = execution.artifacts.filter((a) => a.attemptId === attempt.id).map((a) => a.name);
  const outputs = [...new Set([...produced, ...names(declared?.outputArtifacts)])];
  if (!inputs.length && !outputs.length) return null;
  return html`<div class="artifacts" data-test="artifacts">
    <h4>Artifacts</h4>
    ${inputs.length > 0 && html`<p class="small"><span class="muted">Input:</span></p><ul>${inputs.map((n) => html`<li key=${n} data-test="input-artifact"><${ArtifactLink} execution=${execution} name=${n} /></li>`)}</ul>`}
    ${outputs.length > 0 && html`<p class="small"><span class="muted">Output:</span></p><ul>${outputs.map((n) => html`<li key=${n} data-test="output-artifact">${produced.includes(n)
      ? html`<${ArtifactLink} execution=${execution} name=${n} />`
      : html`<span>${n}</span> <span class="muted small">${attempt.phase === 'done' ? 'not produced' : 'not yet produced'}</span>`}</li>`)}</ul>`}
  </div>`;
}

function TestCaseName({ c }) {
  return html`<span class="test-name"><code>${c.name}</code>${c.classname ? html` <span class="muted small">${c.classname}</span>` : ''}${c.suite ? html` <span class="muted small">(${c.suite})</span>` : ''}</span>`;
}

function Tests({ tests }) {
  if (!tests) return null;
  const failures = tests.failures || [];
  return html`<div class="tests" data-test="test-report">
    <h4>Tests</h4>
    <p class="test-totals" data-test="test-totals">
      <strong>${tests.total}</strong> test${tests.total === 1 ? '' : 's'}:
      <span class="status tone-ok small"><span class="icon" aria-hidden="true">✔</span>${tests.passed} passed</span>
      <span class=${`status small ${tests.failed ? 'tone-bad' : 'tone-idle'}`}><span class="icon" aria-hidden="true">✖</span>${tests.failed} failed</span>
      <span class=${`status small ${tests.errored ? 'tone-bad' : 'tone-idle'}`}><span class="icon" aria-hidden="true">!</span>${tests.errored} errored</span>
      <span class="status tone-idle small"><span class="icon" aria-hidden="true">↷</span>${tests.skipped} skipped</span>
      <span class="muted small">in ${ms(tests.durationMs)}</span>
    </p>
    ${failures.length > 0 && html`<h5>Failures${failures.length < tests.failed + tests.errored ? ` (first ${failures.length})` : ''}</h5>
      <ul class="test-failures">${failures.map((c, i) => html`<li key=${i} data-test="test-failure">
        <span class=${`status small tone-bad`}><span class="icon" aria-hidden="true">${c.status === 'errored' ? '!' : '✖'}</span>${c.status}</span>${' '}
        <${TestCaseName} c=${c} /> <span class="muted small">${ms(c.durationMs)}</span>
        ${c.message && html`<pre class="test-message">${c.message}</pre>`}
        ${c.details && html`<details><summary class="small">Details</summary><pre class="test-message">${c.details}</pre></details>`}
      </li>`)}</ul>`}
    ${(tests.slowest || []).length > 0 && html`<h5>Slowest</h5>
      <ol class="test-slowest" data-test="test-slowest">${tests.slowest.map((c, i) => html`<li key=${i}><${TestCaseName} c=${c} /> <span class="muted small">${ms(c.durationMs)}</span></li>`)}</ol>`}
  </div>`;
}

const DECISIONS = { Approved: ['ok', '✔', 'Approved'], Rejected: ['bad', '✖', 'Rejected'], TimedOut: ['warn', '⏱', 'Timed out'] };

function Decision({ decision }) {
  const [tone, icon, word] = DECISIONS[decision] || ['idle', '•', decision];
  return html`<span class=${`status small tone-${tone}`} data-test="approval-decision"><span class="icon" aria-hidden="true">${icon}</span>${word}</span>`;
}

function Approval({ approval, attempt }) {
  if (!approval) return null;
  return html`<div class="approval-detail" data-test="approval">
    <h4>Approval</h4>
    ${approval.decision
      ? html`<p><${Decision} decision=${approval.decision} />${approval.decidedBy ? ` by ${approval.decidedBy}` : ''}
          ${approval.decidedAtMs ? html` <span class="muted small" title=${when(approval.decidedAtMs)}>${when(approval.decidedAtMs)} (${ago(approval.decidedAtMs)})</span>` : ''}</p>
        ${approval.comment && html`<blockquote class="comment">${approval.comment}</blockquote>`}`
      : html`<p>${attempt.status === 'InProgress' ? 'Waiting for a decision' : 'No decision'}${approval.expiresAtMs ? html` <span class="muted small">(times out ${when(approval.expiresAtMs)})</span>` : ''}.
          ${attempt.status === 'InProgress' ? ' Approve or reject it on the pipeline page.' : ''}</p>`}
    ${approval.notifiedAtMs && html`<p class="muted small">Notification sent ${when(approval.notifiedAtMs)}.</p>`}
    ${approval.notifyError && html`<p class="error-text small">Notification failed: ${approval.notifyError}</p>`}
  </div>`;
}

function AttemptMeta({ attempt: a }) {
  return html`<dl class="meta small">
    <dt>Status</dt><dd><${Status} status=${a.status} small /> <span class="muted">(${a.phase})</span></dd>
    ${a.agentId && html`<dt>Agent</dt><dd><a href=${`#/agents?agent=${enc(a.agentId)}`}>${a.agentName || a.agentId}</a> <code class="muted small">${a.agentId}</code></dd>`}
    <dt>Queued</dt><dd>${when(a.queuedAtMs)}</dd>
    ${a.startedAtMs && html`<dt>Started</dt><dd>${when(a.startedAtMs)}</dd>`}
    ${a.finishedAtMs && html`<dt>Finished</dt><dd>${when(a.finishedAtMs)}</dd>`}
    ${a.startedAtMs && html`<dt>Duration</dt><dd>${duration(a.startedAtMs, a.finishedAtMs)}</dd>`}
  </dl>
  ${a.waitingReason && html`<p class="small muted">Waiting: ${a.waitingReason}</p>`}
  ${a.summary && html`<p class="small summary">${a.summary}</p>`}
  ${a.error && html`<p class="small error-text summary" data-test="attempt-error">${a.error}</p>`}`;
}

function LogButton({ attempt, selectedId, onSelect }) {
  const current = attempt.id === selectedId;
  return html`<button type="button" class=${current ? 'primary' : ''} onClick=${() => onSelect(attempt.id)}
    aria-pressed=${current ? 'true' : 'false'} data-test="show-log">
    ${current ? 'Log shown' : 'Show log'}${attempt.log ? html` <span class="small">(${size(attempt.log.storedLength)}${attempt.log.complete === false ? ', incomplete' : ''})</span>` : ''}</button>`;
}

function ActionDetail({ execution, stage, action, declared, selectedId, onSelect }) {
  const own = action.attempts.find((a) => a.id === selectedId);
  const [chosen, setChosen] = useState(null);
  const attempt = own || action.attempts.find((a) => a.id === chosen) || action.attempts[action.attempts.length - 1];
  return html`<article class="exec-action" data-test="action-detail" data-name=${action.name} aria-labelledby=${`action-${stage.name}-${action.name}`}>
    <header>
      <h3 id=${`action-${stage.name}-${action.name}`}>${action.name}</h3>
      <${Status} status=${action.status} small />
      <span class="muted small">${action.category}/${action.provider} · runOrder ${action.runOrder}</span>
    </header>
    ${action.attempts.length > 1 && html`<div class="attempt-tabs row" role="group" aria-label="Attempts">
      ${action.attempts.map((a) => {
        const [, icon] = look(a.status);
        return html`<button type="button" key=${a.id} aria-pressed=${a === attempt ? 'true' : 'false'}
          class=${a === attempt ? 'chosen' : ''} onClick=${() => setChosen(a.id)} data-test="attempt-tab">
          Attempt ${a.attempt} <span aria-hidden="true">${icon}</span><span class="sr-only">${label(a.status)}</span></button>`;
      })}</div>`}
    ${!attempt && html`<p class="muted small">Not started.</p>`}
    ${attempt && html`<div class="attempt" data-test="attempt" data-attempt=${attempt.id}>
      <div class="attempt-head">
        <strong>Attempt ${attempt.attempt}</strong>
        <${LogButton} attempt=${attempt} selectedId=${selectedId} onSelect=${onSelect} />
      </div>
      <${AttemptMeta} attempt=${attempt} />
      <div class="attempt-grid">
        <div>
          <h4>Configuration</h4>
          <${KeyValues} values=${attempt.resolvedConfiguration} test="configuration" empty="No configuration." />
        </div>
        <div>
          <h4>Output variables</h4>
          <${KeyValues} values=${attempt.outputVariables} test="output-variables" empty=${attempt.phase === 'done' ? 'None.' : 'Not yet.'} />
        </div>
      </div>
      <${Artifacts} execution=${execution} attempt=${attempt} declared=${declared} />
      <${Tests} tests=${attempt.tests} />
      <${Approval} approval=${attempt.approval} attempt=${attempt} />
    </div>`}
  </article>`;
}

function Conditions({ stage, selectedId, onSelect }) {
  const lines = [
    ['beforeEntry', stage.conditionStatus, stage.summary],
    ['onSuccess', stage.onSuccessStatus, stage.onSuccessSummary],
    ['onFailure', stage.onFailureStatus, stage.onFailureSummary],
  ].filter(([, status, summary]) => status || summary);
  const runs = stage.ruleRuns || [];
  if (!lines.length && !runs.length && !stage.retries) return null;
  return html`<div class="conditions" data-test="conditions">
    ${lines.map(([name, status, summary]) => html`<p class="small" key=${name}><strong>${name}</strong> ${status && html`<${Status} status=${status} small />`}
      ${summary && html` <span class="summary">${summary}</span>`}
      ${name === 'beforeEntry' && stage.overriddenBy && html` <span class="muted">(overridden by ${stage.overriddenBy} ${ago(stage.overriddenAtMs)})</span>`}</p>`)}
    ${stage.retries > 0 && html`<p class="small muted">Retried ${stage.retries} time${stage.retries === 1 ? '' : 's'}${stage.autoRetries ? ` (${stage.autoRetries} by onFailure)` : ''}.</p>`}
    ${runs.length > 0 && html`<table class="rule-runs" data-test="rule-runs">
      <caption class="sr-only">Condition rule runs</caption>
      <thead><tr><th scope="col">Condition</th><th scope="col">Status</th><th scope="col">Started</th><th scope="col">Duration</th><th scope="col">Result</th><th scope="col"><span class="sr-only">Log</span></th></tr></thead>
      <tbody>${runs.map((r) => html`<tr key=${r.id} data-test="rule-run">
        <td>${r.ruleCondition} <span class="muted small">${r.actionName}</span></td>
        <td><${Status} status=${r.status} small /></td>
        <td class="small">${when(r.startedAtMs || r.queuedAtMs)}</td>
        <td class="small">${duration(r.startedAtMs, r.finishedAtMs)}</td>
        <td class="small summary">${r.error ? html`<span class="error-text">${r.error}</span>` : r.summary || ''}</td>
        <td><${LogButton} attempt=${r} selectedId=${selectedId} onSelect=${onSelect} /></td>
      </tr>`)}</tbody>
    </table>`}
  </div>`;
}

function StageDetail({ execution, stage, index, definition, selectedId, onSelect }) {
  const declaredStage = definition?.stages?.[index];
  return html`<section class="card exec-stage" data-test="stage-detail" data-name=${stage.name} aria-labelledby=${`stage-detail-${index}`}>
    <header class="exec-stage-head">
      <h2 id=${`stage-detail-${index}`}>${stage.name}</h2>
      <${Status} status=${stage.status} />
      ${stage.startedAtMs && html`<span class="muted small">${duration(stage.startedAtMs, stage.finishedAtMs)}</span>`}
    </header>
    <${Conditions} stage=${stage} selectedId=${selectedId} onSelect=${onSelect} />
    ${stage.actions.map((action) => html`<${ActionDetail} key=${action.name} execution=${execution} stage=${stage} action=${action}
      declared=${declaredStage?.actions?.find((a) => a.name === action.name)} selectedId=${selectedId} onSelect=${onSelect} />`)}
  </section>`;
}

function fileName(execution, where, attempt) {
  const base = `${execution.pipelineName}-${where}-attempt-${attempt.attempt}`;
  return `${base.replace(/[^A-Za-z0-9._-]+/g, '_')}.log`;
}

function LogPanel({ execution, chosen, line, explicit }) {
  if (!chosen) {
    return html`<section class="card exec-log" id="log" data-test="log-panel">
      <h2>Log</h2><p class="muted">Choose “Show log” on an attempt, or a bar of the timeline, to see its log.</p></section>`;
  }
  const { stage, action, attempt } = chosen;
  const where = action ? `${stage.name} › ${action.name}` : `${stage.name} › ${attempt.ruleCondition} rule`;
  const base = `#/executions/${enc(execution.id)}?attempt=${attempt.id}`;
  return html`<section class="card exec-log" id="log" data-test="log-panel" aria-labelledby="log-title">
    <header class="exec-log-head">
      <h2 id="log-title">Log: ${where}, attempt ${attempt.attempt}</h2>
      <${Status} status=${attempt.status} small />
      ${!explicit && html`<span class="muted small">(shown because it ${attempt.status === 'Failed' ? 'failed' : 'is running'})</span>`}
    </header>
    <${LogView} key=${attempt.id} executionId=${execution.id} attemptId=${attempt.id} log=${attempt.log}
      running=${attempt.phase !== 'done'} line=${line} lineHref=${(n) => `${base}&line=${n}`}
      fileName=${fileName(execution, action ? `${stage.name}-${action.name}` : `${stage.name}-${attempt.ruleCondition}`, attempt)} />
  </section>`;
}

function Header({ execution }) {
  const rollbackStage = execution.rollbackStage != null ? execution.stages[execution.rollbackStage]?.name : null;
  const variables = Object.entries(execution.variables || {});
  const revisions = Object.entries(execution.sourceRevisions || {});
  return html`<div class="page-head">
      <h1>Execution <code title=${execution.id}>${execution.id.slice(0, 8)}</code>
        <span class="muted small"> of <a href=${`#/pipelines/${enc(execution.pipelineName)}?execution=${enc(execution.id)}`} data-test="pipeline-link">${execution.pipelineName}</a></span></h1>
      <${Status} status=${execution.status} />
    </div>
    <div class="card exec-header" data-test="execution-header">
      <dl class="meta">
        <dt>Pipeline</dt><dd><a href=${`#/pipelines/${enc(execution.pipelineName)}?execution=${enc(execution.id)}`}>${execution.pipelineName}</a>${' '}
          <span class="muted small">version ${execution.pipelineVersion}</span></dd>
        <dt>Execution</dt><dd><code>${execution.id}</code></dd>
        <dt>Status</dt><dd><${Status} status=${execution.status} /></dd>
        <dt>Trigger</dt><dd>${execution.triggerType}${execution.triggerDetail ? html`: <span data-test="trigger-detail">${execution.triggerDetail}</span>` : ''}</dd>
        <dt>Started</dt><dd>${when(execution.startedAtMs)} <span class="muted small">(${ago(execution.startedAtMs)})</span></dd>
        <dt>Duration</dt><dd>${duration(execution.startedAtMs, execution.finishedAtMs)}${RUNNING.includes(execution.status) ? ' so far' : ''}</dd>
        ${execution.executionType === 'ROLLBACK' && html`<dt>Type</dt><dd data-test="rollback"><strong>ROLLBACK</strong>
          ${rollbackStage ? ` of stage ${rollbackStage}` : ''} to
          ${execution.rollbackTarget ? html`<a href=${`#/executions/${enc(execution.rollbackTarget)}`}><code>${execution.rollbackTarget.slice(0, 8)}</code></a>` : 'an earlier execution'}</dd>`}
        ${execution.waitingForStage && html`<dt>Waiting</dt><dd>in front of stage ${execution.waitingForStage}</dd>`}
        ${variables.length > 0 && html`<dt>Variables</dt><dd>${variables.map(([k, v]) => html`<code key=${k} class="chip">${k}=${v}</code> `)}</dd>`}
        ${revisions.length > 0 && html`<dt>Revisions</dt><dd>${revisions.map(([k, v]) => html`<code key=${k} class="chip">${k}: ${v.slice(0, 12)}</code> `)}</dd>`}
      </dl>
      ${execution.statusSummary && html`<p class="summary" data-test="status-summary">${execution.statusSummary}</p>`}
    </div>`;
}

export function ExecutionPage({ id, query }) {
  const { execution, definition, error, loading } = useExecution(id);
  useTick(execution && RUNNING.includes(execution.status));
  const attempts = useMemo(() => (execution ? allAttempts(execution) : []), [execution]);
  if (error && !execution) return html`<p class="error" role="alert">${error}</p>`;
  if (loading || !execution) return html`<p class="loading">Loading…</p>`;
  const wanted = Number(query.get('attempt'));
  const line = Number(query.get('line')) || 0;
  const explicit = attempts.find((x) => x.attempt.id === wanted) || null;
  const chosen = explicit || defaultAttempt(attempts);
  const select = (attemptId) => {
    location.hash = `#/executions/${enc(execution.id)}?attempt=${attemptId}`;
    requestAnimationFrame(() => document.getElementById('log')?.scrollIntoView({ block: 'start' }));
  };
  return html`<section class="page execution-page" data-test="execution-page">
    <${Header} execution=${execution} />
    ${error && html`<p class="error small" role="alert">Could not refresh: ${error}</p>`}
    <${Timeline} execution=${execution} selectedId=${chosen?.attempt.id} onSelect=${select} />
    <${LogPanel} execution=${execution} chosen=${chosen} line=${explicit ? line : 0} explicit=${!!explicit} />
    <div class="exec-stages">
      ${execution.stages.map((stage, index) => html`<${StageDetail} key=${stage.name} execution=${execution} stage=${stage} index=${index}
        definition=${definition} selectedId=${chosen?.attempt.id} onSelect=${select} />`)}
    </div>
  </section>`;
}
