// The HTTP API as the UI uses it: the same endpoints as the CLI, with the session
// cookie (sent by the browser) and the CSRF token on every change.

let csrfToken = '';

/** An error the API answered with: its code, message and per-field problems. */
export class ApiError extends Error {
  constructor(status, body) {
    super(body?.message || `HTTP ${status}`);
    this.status = status;
    this.code = body?.code || 'error';
    this.errors = body?.errors || [];
  }
}

/** Remembers the CSRF token of the signed-in session. */
export function setCsrfToken(token) {
  csrfToken = token || '';
}

/** Calls the API; resolves to the parsed JSON (or null), rejects with ApiError. */
export async function api(path, { method = 'GET', body, signal } = {}) {
  const headers = { Accept: 'application/json' };
  if (method !== 'GET' && method !== 'HEAD') headers['X-CSRF-Token'] = csrfToken;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: 'same-origin',
    signal,
  });
  const text = await response.text();
  let parsed = null;
  if (text) {
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = { message: text };
    }
  }
  if (!response.ok) {
    const error = new ApiError(response.status, parsed);
    if (response.status === 401) window.dispatchEvent(new CustomEvent('sluice:signed-out'));
    throw error;
  }
  return parsed;
}

/** The detail-types the event stream names its events with. */
const EVENT_TYPES = [
  'CodePipeline Pipeline Execution State Change',
  'CodePipeline Stage Execution State Change',
  'CodePipeline Action Execution State Change',
];

/**
 * Follows the event stream (Server-Sent Events). The browser reconnects by itself and
 * resumes from the last event id; `onReconnect` runs after a reconnection so the
 * caller can reload what it shows (events may have been missed while offline).
 * Returns a function that closes the stream.
 */
export function followEvents(query, onEvent, onReconnect) {
  const source = new EventSource(`/api/v1/events?${new URLSearchParams(query)}`);
  let opened = false;
  source.onopen = () => {
    if (opened && onReconnect) onReconnect();
    opened = true;
  };
  const deliver = (message) => {
    try {
      onEvent(JSON.parse(message.data));
    } catch {
      // Not an event (a comment or keep-alive).
    }
  };
  // Events are named by their detail-type; unnamed ones arrive as plain messages.
  source.onmessage = deliver;
  for (const type of EVENT_TYPES) source.addEventListener(type, deliver);
  return () => source.close();
}
