// Build agents: each with its state, labels, version, the work it holds now (attempts
// offered to or running on it, out of its capacity) and its last heartbeat. People
// allowed to (`agent:write`) create join tokens here: the token is shown once, with the
// commands to run on the new machine (the same as `sluice agent token create` prints).
// Drain, undrain and revoke are here too.
import { html, useContext, useEffect, useState } from '../vendor/preact-htm.js';
import { api } from '../api.js';
import { ago, when } from '../status.js';
import { Session } from '../app.js';

const STATES = {
  online: ['ok', '●', 'Online'],
  offline: ['idle', '○', 'Offline'],
  registered: ['idle', '◌', 'Joined, never connected'],
  revoked: ['bad', '⊘', 'Revoked'],
};

function AgentState({ state }) {
  const [tone, icon, label] = STATES[state] || ['idle', '•', state];
  return html`<span class=${`status tone-${tone} small`} data-test="agent-state" data-state=${state}>
    <span class="icon" aria-hidden="true">${icon}</span>${label}</span>`;
}

/** "k=v, k2=v2" → {k: v, k2: v2}, the way the CLI's `--labels` reads it. */
export function parseLabels(text) {
  const labels = {};
  for (const pair of text.split(',').map((p) => p.trim()).filter(Boolean)) {
    const at = pair.indexOf('=');
    const key = at < 0 ? '' : pair.slice(0, at).trim();
    if (!key) throw new Error(`label "${pair}" must be key=value`);
    labels[key] = pair.slice(at + 1).trim();
  }
  return labels;
}

const UNITS = [
  ['60', 'minutes'],
  ['3600', 'hours'],
  ['86400', 'days'],
];

/** The commands `sluice agent token create` prints, for this controller's address. */
function joinCommands(token) {
  return [
    `sluice-agent join --controller ${location.origin} --token ${token.token} --ca-fingerprint ${token.caFingerprint} --state-dir /var/lib/sluice-agent`,
    'sluice-agent run --state-dir /var/lib/sluice-agent',
  ].join('\n');
}

function TokenResult({ token, onDone }) {
  const [copied, setCopied] = useState('');
  const commands = joinCommands(token);
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(commands);
      setCopied('Copied.');
    } catch {
      setCopied('Copying is not allowed here; select the text instead.');
    }
  };
  return html`<div class="card token-result" data-test="join-token-result" role="status">
    <p><strong>Join token created.</strong> It is shown only now: copy it before you leave this page.
      It works once and expires ${when(token.expiresAtMs)}.</p>
    <dl class="token-facts">
      <dt>Token</dt><dd><code data-test="join-token">${token.token}</code></dd>
      <dt>Controller CA fingerprint (sha256)</dt><dd><code data-test="join-ca-fingerprint">${token.caFingerprint}</code></dd>
      ${Object.keys(token.labels || {}).length > 0 &&
      html`<dt>Labels</dt><dd>${Object.entries(token.labels).map(([k, v]) => html`<code class="chip">${k}=${v}</code> `)}</dd>`}
    </dl>
    <p>On the new build machine, run:</p>
    <pre class="command" data-test="join-command">${commands}</pre>
    <div class="row">
      <button type="button" onClick=${copy}>Copy commands</button>
      <button type="button" data-test="join-token-done" onClick=${onDone}>Done</button>
      <span class="muted small" aria-live="polite">${copied}</span>
    </div>
  </div>`;
}

function JoinTokenForm({ onCreated }) {
  const [open, setOpen] = useState(false);
  const [labels, setLabels] = useState('');
  const [ttl, setTtl] = useState('1');
  const [unit, setUnit] = useState('3600');
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);
  const [token, setToken] = useState(null);
  if (token) return html`<${TokenResult} token=${token} onDone=${() => { setToken(null); setOpen(false); }} />`;
  if (!open) return html`<button class="primary" data-test="join-token-open" onClick=${() => setOpen(true)}>Create a join token…</button>`;
  const submit = async (event) => {
    event.preventDefault();
    setError('');
    let parsed;
    try {
      parsed = parseLabels(labels);
    } catch (e) {
      setError(e.message);
      return;
    }
    const amount = Number(ttl);
    if (!Number.isFinite(amount) || amount <= 0) {
      setError('How long it stays valid must be a positive number.');
      return;
    }
    setBusy(true);
    try {
      const created = await api('/api/v1/agents/tokens', {
        method: 'POST',
        body: { labels: parsed, ttlSeconds: Math.round(amount * Number(unit)) },
      });
      setToken(created);
      setLabels('');
      onCreated();
    } catch (e) {
      setError(e.message);
    } finally {
      setBusy(false);
    }
  };
  return html`<form class="card inline-form join-form" data-test="join-token-form" onSubmit=${submit} aria-label="Create a join token">
    <label>Labels the agent gets
      <input data-test="join-labels" value=${labels} onInput=${(e) => setLabels(e.target.value)} placeholder="os=linux, arch=x86_64" />
    </label>
    <label>Valid for
      <span class="row">
        <input data-test="join-ttl" type="number" min="1" step="any" value=${ttl} onInput=${(e) => setTtl(e.target.value)}
          aria-label="Valid for (amount)" required class="ttl" />
        <select data-test="join-ttl-unit" value=${unit} onChange=${(e) => setUnit(e.target.value)} aria-label="Valid for (unit)">
          ${UNITS.map(([value, label]) => html`<option value=${value}>${label}</option>`)}
        </select>
      </span>
    </label>
    ${error && html`<p class="error" role="alert">${error}</p>`}
    <button class="primary" type="submit" data-test="join-token-create" disabled=${busy}>Create token</button>
    <button type="button" onClick=${() => setOpen(false)}>Cancel</button>
  </form>`;
}

/** Drain, undrain and revoke: each asks the controller, then reloads the list. */
function AgentControls({ agent, onChanged }) {
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);
  if (agent.state === 'revoked') return html`<span class="muted small">revoked</span>`;
  const control = async (action) => {
    if (action === 'revoke' && !window.confirm(`Revoke agent ${agent.name}? It is disconnected at once, what it runs fails, and it can only join again with a new token.`)) return;
    setBusy(true);
    setError('');
    try {
      await api(`/api/v1/agents/${encodeURIComponent(agent.id)}/${action}`, { method: 'POST', body: {} });
      onChanged();
    } catch (e) {
      setError(e.message);
    } finally {
      setBusy(false);
    }
  };
  return html`<span class="row">
    ${agent.drained
      ? html`<button data-test="agent-undrain" disabled=${busy} onClick=${() => control('undrain')}>Undrain</button>`
      : html`<button data-test="agent-drain" disabled=${busy} onClick=${() => control('drain')}>Drain</button>`}
    <button class="danger" data-test="agent-revoke" disabled=${busy} onClick=${() => control('revoke')}>Revoke</button>
    ${error && html`<span class="error" role="alert">${error}</span>`}
  </span>`;
}

export function AgentsPage() {
  const session = useContext(Session);
  const can = session.can;
  const [agents, setAgents] = useState(null);
  const [error, setError] = useState('');
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let closed = false;
    const load = () =>
      api('/api/v1/agents').then(
        (list) => { if (!closed) { setAgents(list); setError(''); } },
        (e) => { if (!closed) setError(e.message); },
      );
    load();
    // Heartbeats and work change without events: look again every 10 seconds.
    const timer = setInterval(load, 10000);
    return () => { closed = true; clearInterval(timer); };
  }, [tick]);
  const reload = () => setTick((t) => t + 1);
  const online = (agents || []).filter((a) => a.state === 'online').length;
  return html`<section class="page agents">
    <div class="page-head">
      <h1>Agents</h1>
      <div class="row">
        <button type="button" data-test="agents-refresh" onClick=${reload}>Refresh</button>
        ${can('agent:write') && html`<${JoinTokenForm} onCreated=${reload} />`}
      </div>
    </div>
    ${error && html`<p class="error" role="alert">${error}</p>`}
    ${!agents && !error && html`<p class="loading">Loading…</p>`}
    ${agents && html`<p class="muted count">${agents.length} agents, ${online} online</p>`}
    ${agents && agents.length === 0 &&
    html`<p class="muted" data-test="agents-empty">No agent has joined yet.${can('agent:write') ? ' Create a join token to add one.' : ''}</p>`}
    ${agents && agents.length > 0 && html`<table class="agent-table" data-test="agent-table">
      <thead><tr><th scope="col">Agent</th><th scope="col">State</th><th scope="col">Labels</th>
        <th scope="col">Version</th><th scope="col">Current work</th><th scope="col">Last heartbeat</th>
        ${can('agent:write') && html`<th scope="col">Actions</th>`}</tr></thead>
      <tbody>
        ${agents.map(
          (a) => html`<tr key=${a.id} data-test="agent-row" data-id=${a.id} data-state=${a.state}>
            <td data-label="Agent"><strong>${a.name}</strong><div class="muted small"><code>${a.id}</code></div>
              <div class="muted small">joined ${ago(a.registeredAtMs)}</div></td>
            <td data-label="State"><${AgentState} state=${a.state} />
              ${a.drained && a.state !== 'revoked' && html` <span class="status tone-warn small" data-test="agent-drained"><span class="icon" aria-hidden="true">⏸</span>drained</span>`}</td>
            <td data-label="Labels"><span class="chips" data-test="agent-labels">
              ${Object.entries(a.labels || {}).map(([k, v]) => html`<code class="chip">${k}=${v}</code>`)}
              ${Object.keys(a.labels || {}).length === 0 && html`<span class="muted">none</span>`}</span></td>
            <td data-label="Version">${a.version || html`<span class="muted">unknown</span>`}</td>
            <td data-label="Current work" data-test="agent-work">
              <span class=${a.running > 0 ? 'busy' : 'muted'}>${a.running > 0 ? `${a.running} running` : 'idle'}</span>
              <span class="muted small"> · ${a.running} of ${a.capacity} slots</span>
              ${(a.work || []).length > 0 && html`<ul class="agent-work-list">${a.work.map(
                (w) => html`<li key=${w.attemptId}><a href=${`#/executions/${encodeURIComponent(w.executionId)}?attempt=${w.attemptId}`}
                  data-test="agent-work-item">${w.pipelineName} › ${w.actionName}</a> <span class="muted small">${w.phase}</span></li>`,
              )}</ul>`}
              <meter min="0" max=${Math.max(1, a.capacity)} value=${a.running} aria-hidden="true"></meter></td>
            <td data-label="Last heartbeat" title=${when(a.lastHeartbeatMs)}>${a.lastHeartbeatMs ? ago(a.lastHeartbeatMs) : html`<span class="muted">never</span>`}</td>
            ${can('agent:write') && html`<td data-label="Actions"><${AgentControls} agent=${a} onChanged=${reload} /></td>`}
          </tr>`,
        )}
      </tbody>
    </table>`}
    ${can('agent:write') &&
    html`<p class="hint">Drain an agent to let it finish what it runs and take nothing new (for maintenance);
      revoke it to disconnect it for good (a lost or retired machine).</p>`}
  </section>`;
}
