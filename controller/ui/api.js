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
 * Follows the event stream (Server-Sent Events). The browser reconnects by itself after
 * a network error and resumes from the last event id; after an HTTP error (such as a
 * 503 from a controller still starting) it gives up, so this opens a new stream a few
 * seconds later, from the last event seen. `onReconnect` runs after every reconnection
 * so the caller can reload what it shows (events may have been missed while offline).
 * Returns a function that closes the stream.
 */
export function followEvents(query, onEvent, onReconnect) {
  let source = null;
  let opened = false;
  let stopped = false;
  let retry = 0;
  let lastId = null;
  const deliver = (message) => {
    if (message.lastEventId) lastId = message.lastEventId;
    try {
      onEvent(JSON.parse(message.data));
    } catch {
      // Not an event (a comment or keep-alive).
    }
  };
  const connect = () => {
    const params = new URLSearchParams(query);
    if (lastId !== null) params.set('since', lastId);
    source = new EventSource(`/api/v1/events?${params}`);
    source.onopen = () => {
      if (opened && onReconnect) onReconnect();
      opened = true;
    };
    source.onerror = () => {
      if (stopped || source.readyState !== EventSource.CLOSED) return;
      clearTimeout(retry);
      retry = setTimeout(connect, 3000);
    };
    // Events are named by their detail-type; unnamed ones arrive as plain messages.
    source.onmessage = deliver;
    for (const type of EVENT_TYPES) source.addEventListener(type, deliver);
  };
  connect();
  return () => {
    stopped = true;
    clearTimeout(retry);
    source.close();
  };
}
