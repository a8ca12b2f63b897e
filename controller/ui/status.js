// Statuses are shown by colour, icon and word together, never by colour alone.
import { html } from './vendor/preact-htm.js';

const LOOKS = {
  Succeeded: ['ok', '✔'],
  Failed: ['bad', '✖'],
  InProgress: ['run', '◐'],
  Stopping: ['warn', '◼'],
  Stopped: ['warn', '◼'],
  Superseded: ['idle', '⤼'],
  Cancelled: ['idle', '⊘'],
  Abandoned: ['warn', '⊘'],
  Skipped: ['idle', '↷'],
  Overridden: ['warn', '⚑'],
  Waiting: ['idle', '…'],
  Never: ['idle', '○'],
};

/** The tone (ok, bad, run, warn, idle) and icon of a status. */
export function look(status) {
  return LOOKS[status || 'Waiting'] || ['idle', '•'];
}

/** The word for a status. */
export function label(status) {
  const name = status || 'Waiting';
  return { InProgress: 'In progress', Waiting: 'Not started', Never: 'Never run' }[name] || name;
}

/** A status badge: icon and word, coloured by meaning. */
export function Status({ status, small }) {
  const [tone, icon] = look(status);
  return html`<span class=${`status tone-${tone}${small ? ' small' : ''}`}>
    <span class="icon" aria-hidden="true">${icon}</span>${label(status)}</span>`;
}

/** "3 min ago", "2 h ago"... */
export function ago(ms) {
  if (!ms) return '';
  const seconds = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} d ago`;
}

/** A duration from start to end (or now, while it runs). */
export function duration(start, end) {
  if (!start) return '';
  const ms = (end || Date.now()) - start;
  if (ms < 1000) return `${ms} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s % 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

/** A local date and time. */
export function when(ms) {
  return ms ? new Date(ms).toLocaleString() : '';
}
