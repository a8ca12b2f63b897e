// Every pipeline with its latest execution: status per stage, the last change, how
// long ago and how long it took. Filter by name and status; live through events.
import { html, useEffect, useMemo, useState } from '../vendor/preact-htm.js';
import { api, followEvents } from '../api.js';
import { Status, ago, duration } from '../status.js';

const STATUSES = ['Succeeded', 'Failed', 'InProgress', 'Stopped', 'Superseded', 'Cancelled'];

function change(pipeline) {
  const e = pipeline.latest;
  if (!e) return html`<span class="muted">never run</span>`;
  const source = pipeline.sources.find((s) => s.revision);
  if (source) {
    const short = source.revision.length > 12 ? source.revision.slice(0, 10) : source.revision;
    return html`<code title=${source.revision}>${short}</code> ${source.message || ''}`;
  }
  return html`<span class="muted">${e.triggerType}</span> ${e.triggerDetail}`;
}

export function Overview({ query }) {
  const [data, setData] = useState(null);
  const [error, setError] = useState('');
  const [name, setName] = useState(query.get('q') || '');
  const [status, setStatus] = useState(query.get('status') || '');

  useEffect(() => {
    let closed = false;
    let stop = () => {};
    let timer = null;
    const load = () =>
      api('/api/v1/overview').then(
        (d) => {
          if (closed) return d;
          setData(d);
          setError('');
          return d;
        },
        (e) => setError(e.message),
      );
    // Reload at most every half second while events arrive.
    const soon = () => {
      if (!timer) timer = setTimeout(() => { timer = null; load(); }, 500);
    };
    load().then((d) => {
      if (!closed && d) stop = followEvents({ since: d.lastEventId }, soon, soon);
    });
    return () => { closed = true; stop(); clearTimeout(timer); };
  }, []);

  const shown = useMemo(() => {
    const needle = name.trim().toLowerCase();
    return (data?.pipelines || []).filter(
      (p) =>
        (!needle || p.name.toLowerCase().includes(needle)) &&
        (!status || (p.latest?.status || 'Never') === status),
    );
  }, [data, name, status]);

  return html`
    <section class="page">
      <div class="page-head">
        <h1>Pipelines</h1>
        <form class="filters" role="search" onSubmit=${(e) => e.preventDefault()}>
          <label>Name <input type="search" value=${name} onInput=${(e) => setName(e.target.value)} placeholder="Filter by name" /></label>
          <label>Status
            <select value=${status} onChange=${(e) => setStatus(e.target.value)}>
              <option value="">Any</option>
              ${STATUSES.map((s) => html`<option value=${s}>${s === 'InProgress' ? 'In progress' : s}</option>`)}
              <option value="Never">Never run</option>
            </select>
          </label>
        </form>
      </div>
      ${error && html`<p class="error" role="alert">${error}</p>`}
      ${!data && !error && html`<p class="loading">Loading…</p>`}
      ${data && html`<p class="muted count">${shown.length} of ${data.pipelines.length} pipelines</p>`}
      <ul class="pipelines">
        ${shown.map(
          (p) => html`<li class="pipeline-row" key=${p.name} data-test=${`pipeline-${p.name}`}>
            <div class="name"><a href=${`#/pipelines/${encodeURIComponent(p.name)}`}>${p.name}</a>
              <span class="muted small">v${p.version}</span></div>
            <div class="latest"><${Status} status=${p.latest ? p.latest.status : 'Never'} /></div>
            <ol class="stage-strip" aria-label="Stages of the latest execution">
              ${p.stageNames.map(
                (s) => html`<li title=${`${s}: ${p.stageStatuses[s] || 'not started'}`}>
                  <span class="stage-name">${s}</span><${Status} status=${p.stageStatuses[s]} small /></li>`,
              )}
            </ol>
            <div class="change">${change(p)}</div>
            <div class="when">
              ${p.latest && html`<a href=${`#/executions/${p.latest.id}`}>${ago(p.latest.startedAtMs)}</a>
                <span class="muted"> · ${duration(p.latest.startedAtMs, p.latest.finishedAtMs)}</span>`}
            </div>
          </li>`,
        )}
      </ul>
    </section>`;
}
