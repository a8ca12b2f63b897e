// Installed plugins (the same list as `sluice plugin list` / `show`): each with its
// versions, category and provider, what it asks for (capabilities) and what it was
// granted. A capability that was not granted is marked, by icon and word.
import { html, useEffect, useMemo, useState } from '../vendor/preact-htm.js';
import { api } from '../api.js';
import { when } from '../status.js';

const KINDS = [
  ['programs', 'program', 'Programs it runs'],
  ['hosts', 'host', 'Hosts it calls'],
  ['secrets', 'secret', 'Secrets it reads'],
  ['env', 'env', 'Environment variables it reads'],
];

function size(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1 << 20) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / (1 << 20)).toFixed(1)} MiB`;
}

function Capabilities({ plugin }) {
  const granted = new Set(plugin.grants || []);
  const caps = plugin.capabilities || {};
  const asked = KINDS.filter(([field]) => (caps[field] || []).length > 0);
  if (asked.length === 0)
    return html`<p class="muted small" data-test="plugin-capabilities">Asks for no capability: runs fully sandboxed.</p>`;
  const chip = (name, ok) => html`<span class=${`chip grant ${ok ? 'granted' : 'missing'}`} data-test="plugin-capability"
      data-granted=${ok ? 'true' : 'false'} title=${ok ? 'granted' : 'asked for, not granted'}>
    <span aria-hidden="true">${ok ? '✔' : '✖'}</span> <code>${name}</code>
    <span class="sr-only">${ok ? ' (granted)' : ' (not granted)'}</span></span>`;
  return html`<div data-test="plugin-capabilities">
    <dl class="capabilities">
      ${asked.map(([field, kind, label]) => {
        const named = caps[field].filter((n) => n !== '*');
        // "*": whatever the operator grants; those grants are not named in the manifest.
        const chosen = caps[field].includes('*')
          ? [...granted].filter((g) => g.startsWith(`${kind}:`)).map((g) => g.slice(kind.length + 1)).filter((n) => !named.includes(n))
          : null;
        return html`<dt>${label}</dt>
          <dd>${named.map((name) => chip(name, granted.has(`${kind}:${name}`)))}
            ${chosen && html`<span class="small muted">any the operator grants${chosen.length ? ':' : ' (none granted)'}</span>
              ${chosen.map((name) => chip(name, true))}`}</dd>`;
      })}
    </dl>
    <p class="small"><span class="muted">Grants:</span>
      <span data-test="plugin-grants">${(plugin.grants || []).length
        ? plugin.grants.map((g) => html`<code class="chip">${g}</code> `)
        : html`<span class="muted">none</span>`}</span></p>
  </div>`;
}

function PluginCard({ id, versions }) {
  const latest = versions[0];
  return html`<article class="card plugin-card" data-test="plugin-row" data-id=${id} aria-labelledby=${`plugin-${id}`}>
    <header class="plugin-head">
      <h2 id=${`plugin-${id}`}>${id}</h2>
      <span class="muted">${latest.categories.join(', ')} / ${latest.owner} / <strong>${latest.provider}</strong></span>
      ${latest.builtin && html`<span class="status tone-idle small" title="Compiled into the agent">built in</span>`}
    </header>
    ${latest.description && html`<p>${latest.description}</p>`}
    <ul class="plugin-versions">
      ${versions.map(
        (p) => html`<li key=${p.version} data-test="plugin-version" data-version=${p.version}>
          <h3>Version ${p.version} <span class="muted small">API ${p.apiVersion}${p.idempotent ? ' · idempotent' : ''}</span></h3>
          <p class="muted small">installed ${when(p.installedAtMs)} · ${size(p.size)} ·
            <code title=${`sha256 ${p.sha256}`}>${p.sha256.slice(0, 12)}</code>
            ${p.config?.length ? ` · ${p.config.length} configuration fields` : ''}</p>
          <${Capabilities} plugin=${p} />
        </li>`,
      )}
    </ul>
  </article>`;
}

/** Compares versions like 1.10.0 > 1.9.2 (numbers by value, the rest as text). */
function newer(a, b) {
  const pa = a.split(/[.-]/);
  const pb = b.split(/[.-]/);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const [x, y] = [pa[i] ?? '', pb[i] ?? ''];
    const [nx, ny] = [Number(x), Number(y)];
    const diff = x !== '' && y !== '' && !Number.isNaN(nx) && !Number.isNaN(ny) ? ny - nx : y.localeCompare(x);
    if (diff) return diff;
  }
  return 0;
}

export function PluginsPage() {
  const [plugins, setPlugins] = useState(null);
  const [error, setError] = useState('');
  const [filter, setFilter] = useState('');
  useEffect(() => {
    api('/api/v1/plugins').then(setPlugins, (e) => setError(e.message));
  }, []);
  const grouped = useMemo(() => {
    const byId = new Map();
    for (const p of plugins || []) {
      if (!byId.has(p.id)) byId.set(p.id, []);
      byId.get(p.id).push(p);
    }
    const needle = filter.trim().toLowerCase();
    return [...byId.entries()]
      .map(([id, versions]) => [id, versions.sort((a, b) => newer(a.version, b.version))])
      .filter(([id, v]) => !needle || `${id} ${v[0].provider} ${v[0].categories.join(' ')}`.toLowerCase().includes(needle))
      .sort((a, b) => a[0].localeCompare(b[0]));
  }, [plugins, filter]);
  return html`<section class="page plugins">
    <div class="page-head">
      <h1>Plugins</h1>
      <form class="filters" role="search" onSubmit=${(e) => e.preventDefault()}>
        <label>Find <input type="search" data-test="plugin-filter" value=${filter}
          onInput=${(e) => setFilter(e.target.value)} placeholder="Name, provider or category" /></label>
      </form>
    </div>
    ${error && html`<p class="error" role="alert">${error}</p>`}
    ${!plugins && !error && html`<p class="loading">Loading…</p>`}
    ${plugins && html`<p class="muted count">${grouped.length} plugins, ${plugins.length} versions installed.
      Install and grant with <code>sluice plugin install</code> and <code>sluice plugin grant</code>.</p>`}
    <div class="plugin-list">
      ${grouped.map(([id, versions]) => html`<${PluginCard} key=${id} id=${id} versions=${versions} />`)}
    </div>
  </section>`;
}
