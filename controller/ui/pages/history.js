// A pipeline's execution history: filters by status, trigger type and start date
// (kept in the address, so a filtered view can be shared), pages by `seq` (newer and
// older, keyset: the API never skips rows with an OFFSET), and a chart of how long
// the last 50 executions took with their success rate. Live through the event stream.
import { html, useEffect, useMemo, useState } from '../vendor/preact-htm.js';
import { api, followEvents } from '../api.js';
import { Status, duration, when } from '../status.js';

const enc = encodeURIComponent;
const PAGE = 50;
const CHART = 50;
const STATUSES = ['Succeeded', 'Failed', 'InProgress', 'Stopping', 'Stopped', 'Superseded', 'Cancelled'];
const TRIGGERS = [
  ['StartPipelineExecution', 'Started by hand or API'],
  ['Webhook', 'Webhook'],
  ['Schedule', 'Schedule'],
  ['PollForSourceChanges', 'Source polling'],
  ['DirectoryChange', 'Directory change'],
  ['ManualRollback', 'Rollback (manual)'],
  ['AutomatedRollback', 'Rollback (automatic)'],
];
const FINISHED = (status) => !['InProgress', 'Stopping'].includes(status);
/** A length of time in words (3.2 s, 4 min 10 s). */
const span = (ms) => duration(1, 1 + ms);

/** 'YYYY-MM-DD' (a date input) → local midnight in ms; `nextDay` for the end of that day. */
function dayStart(text, nextDay) {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(text || '');
  if (!m) return null;
  return new Date(Number(m[1]), Number(m[2]) - 1, Number(m[3]) + (nextDay ? 1 : 0)).getTime();
}

/** The filters and page cursor the address holds. */
function readQuery(query) {
  const num = (key) => (/^\d+$/.test(query.get(key) || '') ? query.get(key) : '');
  return {
    status: query.get('status') || '',
    trigger: query.get('trigger') || '',
    from: query.get('from') || '',
    to: query.get('to') || '',
    before: num('before'),
    after: num('after'),
  };
}

function go(name, params) {
  const q = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) if (value) q.set(key, value);
  const text = q.toString();
  location.hash = `#/pipelines/${enc(name)}/history${text ? `?${text}` : ''}`;
}

function listPath(name, view) {
  const q = new URLSearchParams({ pipeline: name, limit: String(PAGE + 1) });
  if (view.status) q.set('status', view.status);
  if (view.trigger) q.set('trigger', view.trigger);
  const from = dayStart(view.from, false);
  const to = dayStart(view.to, true);
  if (from !== null) q.set('from', String(from));
  if (to !== null) q.set('to', String(to));
  if (view.before) q.set('before', view.before);
  else if (view.after) q.set('after', view.after);
  return `/api/v1/executions?${q}`;
}

/** Loads the page and the chart; reloads (at most every second) while events arrive. */
function useHistory(name, view) {
  const [state, setState] = useState({ loading: true });
  const path = listPath(name, view);
  useEffect(() => {
    let closed = false;
    let stop = () => {};
    let timer = null;
    const load = async () => {
      try {
        const [rows, recent] = await Promise.all([
          api(path),
          api(`/api/v1/executions?pipeline=${enc(name)}&limit=${CHART}`),
        ]);
        if (!closed) setState({ rows, recent });
      } catch (e) {
        if (!closed) setState((s) => ({ ...s, loading: false, error: e.message }));
      }
    };
    const soon = () => {
      if (!timer) timer = setTimeout(() => { timer = null; load(); }, 1000);
    };
    api('/api/v1/events/latest')
      .then((latest) => {
        if (closed) return;
        stop = followEvents({ pipeline: name, since: latest.id }, soon, soon);
        return load();
      })
      .catch((e) => setState({ error: e.message }));
    return () => { closed = true; stop(); clearTimeout(timer); };
  }, [name, path]);
  return state;
}

function Filters({ name, view }) {
  const set = (key, value) => go(name, { ...view, [key]: value, before: '', after: '' });
  const any = view.status || view.trigger || view.from || view.to;
  return html`<form class="filters history-filters" role="search" aria-label="Filter executions"
      onSubmit=${(e) => e.preventDefault()}>
    <label>Status
      <select data-test="filter-status" value=${view.status} onChange=${(e) => set('status', e.target.value)}>
        <option value="">Any</option>
        ${STATUSES.map((s) => html`<option value=${s}>${s === 'InProgress' ? 'In progress' : s}</option>`)}
      </select>
    </label>
    <label>Trigger
      <select data-test="filter-trigger" value=${view.trigger} onChange=${(e) => set('trigger', e.target.value)}>
        <option value="">Any</option>
        ${TRIGGERS.map(([value, label]) => html`<option value=${value}>${label}</option>`)}
      </select>
    </label>
    <label>Started from
      <input type="date" data-test="filter-from" value=${view.from} max=${view.to || undefined}
        onChange=${(e) => set('from', e.target.value)} />
    </label>
    <label>Started until
      <input type="date" data-test="filter-to" value=${view.to} min=${view.from || undefined}
        onChange=${(e) => set('to', e.target.value)} />
    </label>
    ${any && html`<button type="button" data-test="filter-clear" onClick=${() => go(name, {})}>Clear filters</button>`}
  </form>`;
}

/** Bars of the last executions' durations, oldest on the left. */
function DurationChart({ executions }) {
  const bars = useMemo(() => [...executions].reverse(), [executions]);
  if (bars.length === 0) return html`<p class="muted" data-test="history-chart-empty">No executions yet.</p>`;
  const now = Date.now();
  const took = (e) => Math.max(0, (e.finishedAtMs || now) - e.startedAtMs);
  const longest = Math.max(1, ...bars.map(took));
  const finished = bars.filter((e) => FINISHED(e.status));
  const succeeded = finished.filter((e) => e.status === 'Succeeded').length;
  const failed = finished.filter((e) => e.status === 'Failed').length;
  const rate = finished.length ? Math.round((100 * succeeded) / finished.length) : null;
  const [w, gap, h, top] = [14, 4, 140, 18];
  const width = bars.length * (w + gap);
  const tone = (s) => (s === 'Succeeded' ? 'ok' : s === 'Failed' ? 'bad' : FINISHED(s) ? 'idle' : 'run');
  return html`<section class="card history-chart" data-test="history-chart" aria-labelledby="chart-title">
    <header class="chart-head">
      <h2 id="chart-title">Last ${bars.length} executions</h2>
      <p data-test="success-rate" class="success-rate">
        ${rate === null
          ? html`<span class="muted">No finished executions yet</span>`
          : html`<strong>${rate} %</strong> succeeded <span class="muted">(${succeeded} of ${finished.length} finished, ${failed} failed)</span>`}
      </p>
    </header>
    <div class="chart-scroll">
      <svg class="bars" viewBox=${`0 0 ${width} ${h + top}`} width=${width} height=${h + top} role="group"
        aria-label=${`Durations of the last ${bars.length} executions, oldest first; longest ${span(longest)}`}>
        <defs>
          <pattern id="hatch-failed" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">
            <rect class="hatch-bg" width="6" height="6" />
            <line class="hatch-line" x1="0" y1="0" x2="0" y2="6" />
          </pattern>
        </defs>
        <line class="axis" x1="0" x2=${width} y1=${h + top - 0.5} y2=${h + top - 0.5} />
        ${bars.map((e, i) => {
          const bh = Math.max(2, Math.round((took(e) / longest) * h));
          const x = i * (w + gap);
          const y = h + top - bh;
          const label = `${e.status === 'InProgress' ? 'In progress' : e.status}, ${duration(e.startedAtMs, e.finishedAtMs)}, started ${when(e.startedAtMs)}, execution ${e.id.slice(0, 8)}`;
          return html`<a href=${`#/executions/${e.id}`} key=${e.id} class=${`bar tone-${tone(e.status)}`}
              data-test="chart-bar" data-status=${e.status} data-id=${e.id} aria-label=${label}>
            <title>${label}</title>
            <rect x=${x} y=${y} width=${w} height=${bh} rx="2" />
            ${e.status === 'Failed' && html`<text class="bar-icon" x=${x + w / 2} y=${y - 4} text-anchor="middle" aria-hidden="true">✖</text>`}
            ${!FINISHED(e.status) && html`<text class="bar-icon" x=${x + w / 2} y=${y - 4} text-anchor="middle" aria-hidden="true">◐</text>`}
          </a>`;
        })}
      </svg>
    </div>
    <p class="legend small muted">
      <span><span class="swatch tone-ok" aria-hidden="true"></span> Succeeded</span>
      <span><span class="swatch swatch-failed" aria-hidden="true"></span> ✖ Failed (hatched)</span>
      <span><span class="swatch tone-run" aria-hidden="true"></span> ◐ Running (so far)</span>
      <span><span class="swatch tone-idle" aria-hidden="true"></span> Stopped or superseded</span>
      <span>Tallest bar: ${span(longest)}</span>
    </p>
  </section>`;
}

function Pager({ name, view, hasNewer, hasOlder, first, last }) {
  if (!hasNewer && !hasOlder) return null;
  return html`<nav class="pager row" aria-label="Pages">
    ${hasNewer && html`<a href=${`#/pipelines/${enc(name)}/history`} data-test="page-newest"
      onClick=${(e) => { e.preventDefault(); go(name, { ...view, before: '', after: '' }); }}>« Newest</a>`}
    <button data-test="page-newer" disabled=${!hasNewer}
      onClick=${() => go(name, { ...view, before: '', after: String(first) })}>‹ Newer</button>
    <button data-test="page-older" disabled=${!hasOlder}
      onClick=${() => go(name, { ...view, after: '', before: String(last) })}>Older ›</button>
  </nav>`;
}

export function HistoryPage({ name, query }) {
  const view = readQuery(query);
  const state = useHistory(name, view);
  const base = html`<div class="page-head">
      <h1>History of <a href=${`#/pipelines/${enc(name)}`}>${name}</a></h1>
      <${Filters} name=${name} view=${view} />
    </div>`;
  if (state.error) return html`<section class="page">${base}<p class="error" role="alert">${state.error}</p></section>`;
  if (!state.rows) return html`<section class="page">${base}<p class="loading">Loading…</p></section>`;
  // One row more than a page says whether there is another page that way.
  const more = state.rows.length > PAGE;
  const rows = view.after ? state.rows.slice(more ? 1 : 0) : state.rows.slice(0, PAGE);
  const hasNewer = view.after ? more : Boolean(view.before);
  const hasOlder = view.after ? true : more;
  const filtered = view.status || view.trigger || view.from || view.to;
  return html`<section class="page history">
    ${base}
    <${DurationChart} executions=${state.recent || []} />
    <h2 class="sr-only">Executions</h2>
    ${rows.length === 0
      ? html`<p class="muted" data-test="history-empty">${filtered ? 'No execution matches these filters.' : 'No executions on this page.'}</p>`
      : html`<table class="history-table" data-test="history-table">
          <thead><tr><th scope="col">Execution</th><th scope="col">Status</th><th scope="col">Trigger</th>
            <th scope="col">Started</th><th scope="col">Duration</th></tr></thead>
          <tbody>
            ${rows.map(
              (e) => html`<tr key=${e.id} data-test="history-row" data-id=${e.id} data-seq=${e.seq} data-status=${e.status}>
                <td data-label="Execution"><a href=${`#/executions/${e.id}`}><code>${e.id.slice(0, 8)}</code></a>
                  <span class="muted small"> #${e.seq} · v${e.pipelineVersion}</span>
                  ${e.executionType === 'ROLLBACK' && html` <strong class="small">ROLLBACK</strong>`}</td>
                <td data-label="Status"><${Status} status=${e.status} small />
                  ${e.statusSummary && html`<div class="small muted summary-line" title=${e.statusSummary}>${e.statusSummary.split('\n')[0]}</div>`}</td>
                <td data-label="Trigger">${e.triggerType}<div class="small muted summary-line" title=${e.triggerDetail}>${e.triggerDetail}</div></td>
                <td data-label="Started">${when(e.startedAtMs)}</td>
                <td data-label="Duration">${duration(e.startedAtMs, e.finishedAtMs)}</td>
              </tr>`,
            )}
          </tbody>
        </table>`}
    <${Pager} name=${name} view=${view} hasNewer=${hasNewer} hasOlder=${hasOlder && rows.length > 0}
      first=${rows[0]?.seq} last=${rows[rows.length - 1]?.seq} />
  </section>`;
}
