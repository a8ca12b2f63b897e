// One pipeline: its stages in order as columns, each action a card (grouped by
// runOrder) with status, duration, agent and summary, for the execution chosen
// (the latest by default). Updates arrive through the event stream. The controls a
// person needs: start (with variables), stop or abandon, retry, approve or reject,
// enable or disable a transition; each shows only to users allowed to use it.
import { html, createContext, useContext, useEffect, useRef, useState } from '../vendor/preact-htm.js';
import { api, followEvents } from '../api.js';
import { Status, ago, duration, when } from '../status.js';
import { Session } from '../app.js';

const enc = encodeURIComponent;

/** Reloads the page's data: controls call it after a change they made. */
const Refresh = createContext(() => {});

function useLive(name, selected) {
  const [state, setState] = useState({ loading: true });
  const reload = useRef(() => {});
  useEffect(() => {
    let closed = false;
    let stop = () => {};
    let timer = null;
    const load = async () => {
      try {
        const [pipeline, executions, transitions] = await Promise.all([
          api(`/api/v1/pipelines/${enc(name)}`),
          api(`/api/v1/executions?pipeline=${enc(name)}&limit=10`),
          api(`/api/v1/pipelines/${enc(name)}/transitions`),
        ]);
        const id = selected || executions[0]?.id;
        const execution = id ? await api(`/api/v1/executions/${enc(id)}`) : null;
        if (!closed) setState({ pipeline, executions, transitions, execution });
      } catch (e) {
        if (!closed) setState((s) => ({ ...s, loading: false, error: e.message }));
      }
    };
    const soon = () => {
      if (!timer) timer = setTimeout(() => { timer = null; load(); }, 250);
    };
    reload.current = load;
    api('/api/v1/events/latest')
      .then((latest) => {
        if (closed) return;
        stop = followEvents({ pipeline: name, since: latest.id }, soon, soon);
        return load();
      })
      .catch((e) => setState({ error: e.message }));
    return () => { closed = true; stop(); clearTimeout(timer); };
  }, [name, selected]);
  return [state, () => reload.current()];
}

/** Runs an API call from a control, showing its error next to it. */
function useAction() {
  const refresh = useContext(Refresh);
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);
  const run = async (call) => {
    setBusy(true);
    setError('');
    try {
      const result = await call();
      refresh();
      return result;
    } catch (e) {
      setError(e.message);
    } finally {
      setBusy(false);
    }
  };
  return { error, busy, run };
}

function StartForm({ name, variables, onStarted }) {
  const { error, busy, run } = useAction();
  const [open, setOpen] = useState(false);
  const submit = (event) => {
    event.preventDefault();
    const form = new FormData(event.target);
    const values = variables
      .map((v) => ({ name: v.name, value: String(form.get(`var-${v.name}`) ?? '') }))
      .filter((v) => v.value !== '');
    run(async () => {
      const started = await api(`/api/v1/pipelines/${enc(name)}/executions`, {
        method: 'POST',
        body: { variables: values },
      });
      setOpen(false);
      onStarted(started.pipelineExecutionId || started.id);
    });
  };
  if (!open) return html`<button class="primary" data-test="start-open" onClick=${() => setOpen(true)}>Start…</button>`;
  return html`<form class="card inline-form" onSubmit=${submit} aria-label="Start an execution">
    ${variables.length === 0 && html`<p class="muted">No pipeline variables.</p>`}
    ${variables.map(
      (v) => html`<label>${v.name}
        <input name=${`var-${v.name}`} placeholder=${v.defaultValue ?? ''} title=${v.description || ''} /></label>`,
    )}
    ${error && html`<p class="error" role="alert">${error}</p>`}
    <button class="primary" type="submit" data-test="start-submit" disabled=${busy}>Start</button>
    <button type="button" onClick=${() => setOpen(false)}>Cancel</button>
  </form>`;
}

function TransitionControl({ pipeline, stage, transition, can }) {
  const { error, busy, run } = useAction();
  const [reason, setReason] = useState('');
  const enabled = !transition || transition.enabled;
  const set = (value) =>
    run(() =>
      api(`/api/v1/pipelines/${enc(pipeline)}/stages/${enc(stage)}/transition`, {
        method: 'POST',
        body: { enabled: value, reason },
      }),
    );
  return html`<div class=${`transition ${enabled ? 'on' : 'off'}`} data-test="transition">
    <span class="transition-state"><span class="arrow" aria-hidden="true">${enabled ? '➜' : '⛔'}</span>
    <span>${enabled ? 'Transition enabled' : 'Transition disabled'}
      ${transition && html`<span class="muted small"> by ${transition.changedBy} ${ago(transition.changedAtMs)}
        ${!enabled && transition.reason ? `: ${transition.reason}` : ''}</span>`}</span></span>
    ${can('transition:write') &&
    (enabled
      ? html`<form class="row" onSubmit=${(e) => { e.preventDefault(); set(false); }}>
          <label class="sr-only" for=${`reason-${stage}`}>Reason to disable the transition into ${stage}</label>
          <input id=${`reason-${stage}`} value=${reason} onInput=${(e) => setReason(e.target.value)} placeholder="Reason" required data-test="transition-reason" />
          <button type="submit" data-test="transition-disable" disabled=${busy}>Disable</button></form>`
      : html`<button data-test="transition-enable" onClick=${() => set(true)} disabled=${busy}>Enable</button>`)}
    ${error && html`<p class="error" role="alert">${error}</p>`}
  </div>`;
}

function ApprovalControl({ execution, stage, action, can }) {
  const { error, busy, run } = useAction();
  const [comment, setComment] = useState('');
  if (!can('execution:approve')) return html`<p class="muted">Waiting for approval.</p>`;
  const decide = (decision) =>
    run(() =>
      api(`/api/v1/executions/${enc(execution)}/approvals`, {
        method: 'POST',
        body: { stage, action, decision, comment },
      }),
    );
  return html`<div class="approval">
    <label>Comment <input data-test="approval-comment" value=${comment} onInput=${(e) => setComment(e.target.value)} /></label>
    <div class="row">
      <button class="primary" data-test="approve" disabled=${busy} onClick=${() => decide('Approved')}>Approve</button>
      <button class="danger" data-test="reject" disabled=${busy} onClick=${() => decide('Rejected')}>Reject</button>
    </div>
    ${error && html`<p class="error" role="alert">${error}</p>`}
  </div>`;
}

function ActionCard({ execution, stage, action, can }) {
  const attempt = action.attempts[action.attempts.length - 1];
  const pendingApproval = attempt?.approval && !attempt.approval.decision && attempt.status === 'InProgress';
  return html`<article class="action-card" data-test=${`action-${action.name}`} aria-label=${`${action.name}: ${action.status || 'not started'}`}>
    <header><h4>${action.name}</h4><${Status} status=${action.status} small /></header>
    <p class="muted small">${action.category}/${action.provider}
      ${attempt?.startedAtMs && html` · ${duration(attempt.startedAtMs, attempt.finishedAtMs)}`}
      ${attempt?.agentId && html` · on <span title=${attempt.agentId} data-test="action-agent">${attempt.agentName || attempt.agentId}</span>`}
      ${action.attempts.length > 1 && html` · attempt ${attempt.attempt}`}</p>
    ${(attempt?.outputVariables?.CommitId || attempt?.outputVariables?.Digest) &&
    html`<p class="small"><code>${(attempt.outputVariables.CommitId || attempt.outputVariables.Digest).slice(0, 12)}</code>
      ${attempt.outputVariables.CommitMessage ? ` ${attempt.outputVariables.CommitMessage.split('\n')[0]}` : ''}</p>`}
    ${attempt?.summary && html`<p class="small">${attempt.summary}</p>`}
    ${attempt?.error && html`<p class="small error-text">${attempt.error}</p>`}
    ${attempt?.waitingReason && html`<p class="small muted">Waiting: ${attempt.waitingReason}</p>`}
    ${attempt?.approval?.decision &&
    html`<p class="small" data-test="approval-decision">${attempt.approval.decision} by ${attempt.approval.decidedBy} ${ago(attempt.approval.decidedAtMs)}
      ${attempt.approval.comment ? `: “${attempt.approval.comment}”` : ''}</p>`}
    ${pendingApproval && html`<${ApprovalControl} execution=${execution.id} stage=${stage} action=${action.name} can=${can} />`}
  </article>`;
}

function StageColumn({ pipeline, execution, stage, transition, index, can }) {
  const { error, busy, run } = useAction();
  const retry = (mode) =>
    run(() =>
      api(`/api/v1/executions/${enc(execution.id)}/stages/${enc(stage.name)}/retry`, {
        method: 'POST',
        body: { retryMode: mode },
      }),
    );
  const groups = new Map();
  for (const action of stage.actions) {
    if (!groups.has(action.runOrder)) groups.set(action.runOrder, []);
    groups.get(action.runOrder).push(action);
  }
  const retryable = ['Failed', 'Stopped'].includes(stage.status) && stage.conditionStatus !== 'Failed';
  return html`<section class="stage" data-test=${`stage-${stage.name}`} aria-labelledby=${`stage-${index}`}>
    <header>
      <h3 id=${`stage-${index}`}>${stage.name}</h3>
      <${Status} status=${stage.status} />
    </header>
    ${index > 0 && html`<${TransitionControl} pipeline=${pipeline} stage=${stage.name} transition=${transition} can=${can} />`}
    ${stage.startedAtMs && html`<p class="muted small">${duration(stage.startedAtMs, stage.finishedAtMs)}</p>`}
    ${stage.summary && html`<p class="small condition">beforeEntry: ${stage.summary}</p>`}
    ${stage.onSuccessSummary && html`<p class="small condition">onSuccess: ${stage.onSuccessSummary}</p>`}
    ${stage.onFailureSummary && html`<p class="small condition">onFailure: ${stage.onFailureSummary}</p>`}
    ${[...groups.entries()].sort((a, b) => a[0] - b[0]).map(
      ([runOrder, actions]) => html`<div class="run-order" aria-label=${`runOrder ${runOrder}`}>
        ${actions.map((a) => html`<${ActionCard} execution=${execution} stage=${stage.name} action=${a} can=${can} />`)}
      </div>`,
    )}
    ${retryable && can('execution:retry') && html`<div class="row">
      <button disabled=${busy} onClick=${() => retry('FAILED_ACTIONS')}>Retry failed</button>
      <button disabled=${busy} onClick=${() => retry('ALL_ACTIONS')}>Retry all</button></div>`}
    ${error && html`<p class="error" role="alert">${error}</p>`}
  </section>`;
}

function StopControl({ execution, can }) {
  const { error, busy, run } = useAction();
  if (!can('execution:stop') || !['InProgress', 'Stopping'].includes(execution.status)) return null;
  const stop = (abandon) =>
    run(() =>
      api(`/api/v1/executions/${enc(execution.id)}/stop`, {
        method: 'POST',
        body: { abandon, reason: 'stopped from the web UI' },
      }),
    );
  return html`<span class="row">
    ${execution.status === 'InProgress' && html`<button disabled=${busy} onClick=${() => stop(false)}>Stop</button>`}
    <button class="danger" disabled=${busy} onClick=${() => stop(true)}>Abandon</button>
    ${error && html`<span class="error" role="alert">${error}</span>`}
  </span>`;
}

export function PipelinePage({ name, query }) {
  const session = useContext(Session);
  const can = session.can;
  const selected = query.get('execution') || '';
  const [state, reload] = useLive(name, selected);
  if (state.error) return html`<p class="error" role="alert">${state.error}</p>`;
  if (!state.pipeline) return html`<p class="loading">Loading…</p>`;
  const { pipeline, executions, transitions, execution } = state;
  const definition = pipeline.definition;
  const choose = (id) => { location.hash = `#/pipelines/${enc(name)}?execution=${enc(id)}`; };
  const stages = execution
    ? execution.stages
    : definition.stages.map((s) => ({
        name: s.name,
        actions: s.actions.map((a) => ({ ...a, category: a.actionTypeId.category, provider: a.actionTypeId.provider, runOrder: a.runOrder || 1, attempts: [] })),
      }));
  return html`<${Refresh.Provider} value=${reload}><section class="page">
    <div class="page-head">
      <h1>${name} <span class="muted small">version ${pipeline.version} · ${definition.executionMode || 'SUPERSEDED'}</span></h1>
      <div class="head-actions">
        <a href=${`#/pipelines/${enc(name)}/history`}>History</a>
        ${can('execution:start') && html`<${StartForm} name=${name} variables=${definition.variables || []} onStarted=${choose} />`}
      </div>
    </div>
    ${execution && html`<div class="execution-bar card" data-test="execution-bar">
      <${Status} status=${execution.status} />
      <span>Execution <a href=${`#/executions/${execution.id}`}><code>${execution.id.slice(0, 8)}</code></a>
        ${execution.executionType === 'ROLLBACK' && html` <strong>ROLLBACK</strong> to <code>${(execution.rollbackTarget || '').slice(0, 8)}</code>`}</span>
      <span class="muted">${execution.triggerType}: ${execution.triggerDetail}</span>
      <span class="muted">started ${when(execution.startedAtMs)} · ${duration(execution.startedAtMs, execution.finishedAtMs)}</span>
      <${StopControl} execution=${execution} can=${can} />
      ${execution.statusSummary && html`<p class="summary">${execution.statusSummary}</p>`}
    </div>`}
    <div class="stages">
      ${stages.map(
        (stage, index) => html`<${StageColumn} pipeline=${name} execution=${execution || { id: '' }} stage=${stage}
          transition=${transitions.find((t) => t.stageName === stage.name)} index=${index} can=${can} />`,
      )}
    </div>
    <section class="recent">
      <h2>Recent executions</h2>
      <ol class="execution-list">
        ${executions.map(
          (e) => html`<li key=${e.id} aria-current=${execution && e.id === execution.id ? 'true' : undefined}>
            <button class="link" onClick=${() => choose(e.id)}><code>${e.id.slice(0, 8)}</code></button>
            <${Status} status=${e.status} small />
            <span class="muted small">${e.triggerType} · ${ago(e.startedAtMs)} · ${duration(e.startedAtMs, e.finishedAtMs)}</span>
          </li>`,
        )}
      </ol>
    </section>
  </section><//>`;
}
