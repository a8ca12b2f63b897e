// The log viewer: one attempt's log, tailed live while the attempt runs, with ANSI
// colours, search and a download link.
//
// Logs can be large (tens of MB), so nothing here is proportional to the log in the
// DOM: the text is kept as the chunks the API returned (each cut at a line end) plus
// two typed arrays that say where each line starts; only the lines in view (and a few
// around them) are rendered, at a fixed line height, over a spacer as tall as the
// whole log. The log is fetched 1 MiB at a time (what the API returns per request),
// lines are indexed as each chunk arrives, and search runs in time slices.
//
// Log text only ever becomes text nodes (through Preact), never HTML.
import { html, useEffect, useLayoutEffect, useMemo, useRef, useState } from './vendor/preact-htm.js';

const enc = encodeURIComponent;

/** Height of one line in pixels; `.log-line` in style.css uses the same. */
export const LINE_HEIGHT = 18;
/** Browsers cap element heights (~17M px in Firefox); past this the scroll is scaled. */
const MAX_HEIGHT = 8_000_000;
/** Lines rendered above and below the visible ones. */
const OVERSCAN = 20;
/** Longer lines are cut when shown (the download has them whole). */
const MAX_SHOWN = 4000;
/** Bytes decoded and indexed in one go. */
const SLICE = 256 * 1024;
/** A log at most this long downloads with the plain link (one API response). */
const ONE_RESPONSE = 1 << 20;

// ---- ANSI escapes ------------------------------------------------------------------

// CSI (`ESC [ params intermediates final`), OSC (`ESC ] ... BEL|ST`), DCS/SOS/PM/APC
// strings, and any other escape (`ESC` + one character). None spans a newline, so
// stripping a whole chunk keeps its lines.
const ESCAPES =
  // eslint-disable-next-line no-control-regex
  /\x1b\[([0-?]*)([ -/]*)([@-~])|\x1b\][^\x07\x1b\n]*(?:\x07|\x1b\\)?|\x1b[PX^_][^\x1b\n]*(?:\x1b\\)?|\x1b[ -/]*[0-~]?/g;
// Other control characters (but tab) are dropped from what is shown.
// eslint-disable-next-line no-control-regex
const CONTROLS = /[\x00-\x08\x0b-\x1a\x1c-\x1f\x7f]/g;

/** A raw line as a terminal would leave it: no trailing CR, only what follows a CR. */
function terminalLine(raw) {
  let line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
  const cr = line.lastIndexOf('\r');
  if (cr >= 0) line = line.slice(cr + 1);
  return line;
}

/** The text of a line without escapes or control characters (what search sees). */
export function plainText(raw) {
  const line = terminalLine(raw);
  if (line.indexOf('\x1b') < 0 && !/[\x00-\x08\x0b-\x1f\x7f]/.test(line)) return line; // eslint-disable-line no-control-regex
  return line.replace(ESCAPES, '').replace(CONTROLS, '');
}

/** Applies one SGR sequence's parameters to a style {fg, bg, bold}. */
function applySgr(style, params) {
  const codes = params === '' ? [0] : params.split(/[;:]/).map((p) => (p === '' ? 0 : Number(p)));
  let { fg, bg, bold } = style;
  for (let i = 0; i < codes.length; i++) {
    const n = codes[i];
    if (n === 0) {
      fg = null;
      bg = null;
      bold = false;
    } else if (n === 1) bold = true;
    else if (n === 22) bold = false;
    else if (n >= 30 && n <= 37) fg = n - 30;
    else if (n >= 90 && n <= 97) fg = n - 90 + 8;
    else if (n === 39) fg = null;
    else if (n >= 40 && n <= 47) bg = n - 40;
    else if (n >= 100 && n <= 107) bg = n - 100 + 8;
    else if (n === 49) bg = null;
    else if (n === 38 || n === 48) {
      // 256-colour and true-colour forms are not shown; skip their arguments.
      i += codes[i + 1] === 5 ? 2 : codes[i + 1] === 2 ? 4 : 0;
    }
  }
  return { fg, bg, bold };
}

function styleClass({ fg, bg, bold }) {
  let cls = '';
  if (fg !== null) cls += ` ansi-f${fg}`;
  if (bg !== null) cls += ` ansi-b${bg}`;
  if (bold) cls += ' ansi-bold';
  return cls.trim();
}

/**
 * A line as segments [{text, cls}] with escapes removed and SGR colours (30–37,
 * 90–97, 40–47, 100–107, bold, reset) turned into classes. Colours reset at each line.
 */
export function ansiSegments(raw) {
  const line = terminalLine(raw);
  const segments = [];
  let style = { fg: null, bg: null, bold: false };
  let last = 0;
  const push = (text) => {
    const clean = text.replace(CONTROLS, '');
    if (clean) segments.push({ text: clean, cls: styleClass(style) });
  };
  ESCAPES.lastIndex = 0;
  let m;
  while ((m = ESCAPES.exec(line))) {
    if (m.index > last) push(line.slice(last, m.index));
    last = ESCAPES.lastIndex;
    if (m[3] === 'm' && !m[2] && !/^[<=>?]/.test(m[1])) style = applySgr(style, m[1]);
  }
  if (last < line.length) push(line.slice(last));
  return segments;
}

// ---- the log text ------------------------------------------------------------------

/** The log as chunks of text cut at line ends, with an index of line starts. */
export class LogBuffer {
  constructor() {
    this.chunks = [];
    this.firstLine = []; // per chunk: the index of its first line
    this.owner = new Uint32Array(4096); // per line: its chunk
    this.starts = new Uint32Array(4096); // per line: where it starts in its chunk
    this.count = 0; // whole lines (ended by a newline)
    this.tail = ''; // the unfinished last line
    this.bytes = 0;
    this.decoder = new TextDecoder('utf-8');
  }

  /** Lines, counting an unfinished last one. */
  get lines() {
    return this.count + (this.tail ? 1 : 0);
  }

  /** Adds bytes (UTF-8 characters split between calls are joined). */
  push(bytes) {
    this.bytes += bytes.length;
    this.pushText(this.decoder.decode(bytes, { stream: true }));
  }

  /** The log has ended: flush what the decoder holds. */
  finish() {
    const rest = this.decoder.decode();
    if (rest) this.pushText(rest);
    // A last line without a newline becomes a whole line (searchable like the rest).
    if (this.tail) this.pushText('\n');
  }

  pushText(text) {
    const cut = text.lastIndexOf('\n');
    if (cut < 0) {
      this.tail += text;
      return;
    }
    const chunk = this.tail + text.slice(0, cut + 1);
    this.tail = text.slice(cut + 1);
    const index = this.chunks.length;
    this.chunks.push(chunk);
    this.firstLine.push(this.count);
    let start = 0;
    while (start < chunk.length) {
      if (this.count === this.owner.length) this.grow();
      this.owner[this.count] = index;
      this.starts[this.count] = start;
      this.count++;
      start = chunk.indexOf('\n', start) + 1;
    }
  }

  grow() {
    const owner = new Uint32Array(this.owner.length * 2);
    owner.set(this.owner);
    this.owner = owner;
    const starts = new Uint32Array(this.starts.length * 2);
    starts.set(this.starts);
    this.starts = starts;
  }

  /** Line `i` (0-based) as received, without its newline. */
  raw(i) {
    if (i >= this.count) return i === this.count ? this.tail : '';
    const chunk = this.chunks[this.owner[i]];
    const start = this.starts[i];
    let end = i + 1 < this.count && this.owner[i + 1] === this.owner[i] ? this.starts[i + 1] - 1 : chunk.length - 1;
    if (end < start) end = start;
    return chunk.slice(start, end);
  }
}

// ---- search ------------------------------------------------------------------------

/** Columns (in plain text) where `query` (lower case) starts in `plain`. */
function findAll(plain, query) {
  const found = [];
  if (!query) return found;
  const lower = plain.toLowerCase();
  if (lower.length !== plain.length) return found;
  for (let at = lower.indexOf(query); at >= 0; at = lower.indexOf(query, at + query.length)) found.push(at);
  return found;
}

/**
 * A search over a LogBuffer, run in slices of a few milliseconds so a large log does
 * not block the page; it extends itself when more of the log arrives (`resume`).
 */
class Search {
  constructor(buffer, query, onProgress) {
    this.buffer = buffer;
    this.query = query.toLowerCase();
    this.onProgress = onProgress;
    this.lines = new Uint32Array(1024);
    this.cols = new Uint32Array(1024);
    this.count = 0;
    this.chunk = 0; // next chunk to search
    this.line = 0; // next line to search, within a per-line pass
    this.running = false;
    this.cancelled = false;
  }

  add(line, col) {
    if (this.count === this.lines.length) {
      const lines = new Uint32Array(this.lines.length * 2);
      lines.set(this.lines);
      this.lines = lines;
      const cols = new Uint32Array(this.cols.length * 2);
      cols.set(this.cols);
      this.cols = cols;
    }
    this.lines[this.count] = line;
    this.cols[this.count] = col;
    this.count++;
  }

  /** Whether the whole of what has arrived (but an unfinished last line) is searched. */
  get done() {
    return this.chunk >= this.buffer.chunks.length;
  }

  resume() {
    if (this.running || this.cancelled || !this.query || this.done) return;
    this.running = true;
    setTimeout(() => this.step(), 0);
  }

  cancel() {
    this.cancelled = true;
  }

  step() {
    if (this.cancelled) return;
    const deadline = performance.now() + 12;
    const b = this.buffer;
    const q = this.query;
    while (this.chunk < b.chunks.length && performance.now() < deadline) {
      const text = b.chunks[this.chunk];
      const first = b.firstLine[this.chunk];
      const end = this.chunk + 1 < b.chunks.length ? b.firstLine[this.chunk + 1] : b.count;
      if (this.line <= first) {
        // Whole chunk at once unless a carriage return rewrites some line: strip the
        // escapes of the chunk (they never span a newline) and count newlines.
        if (text.indexOf('\r') < 0) {
          // eslint-disable-next-line no-control-regex
          const plain = /[\x00-\x08\x0b-\x1f\x7f]/.test(text) ? text.replace(ESCAPES, '').replace(CONTROLS, '') : text;
          const lower = plain.toLowerCase();
          if (lower.length === plain.length) {
            let line = first;
            let lineStart = 0;
            let nl = lower.indexOf('\n');
            for (let at = lower.indexOf(q); at >= 0; at = lower.indexOf(q, at + q.length)) {
              while (nl >= 0 && nl < at) {
                line++;
                lineStart = nl + 1;
                nl = lower.indexOf('\n', lineStart);
              }
              this.add(line, at - lineStart);
            }
            this.chunk++;
            this.line = end;
            continue;
          }
        }
        this.line = first;
      }
      // Line by line, without escapes.
      while (this.line < end) {
        for (const col of findAll(plainText(b.raw(this.line)), q)) this.add(this.line, col);
        this.line++;
        if ((this.line & 1023) === 0 && performance.now() >= deadline) break;
      }
      if (this.line >= end) this.chunk++;
    }
    this.onProgress();
    if (this.chunk < b.chunks.length) setTimeout(() => this.step(), 0);
    else this.running = false;
  }

  /** The index of the first match at or after line `line`. */
  indexFrom(line) {
    let lo = 0;
    let hi = this.count;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.lines[mid] < line) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}

// ---- fetching ----------------------------------------------------------------------

const sleep = (ms, signal) =>
  new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => { clearTimeout(timer); resolve(); }, { once: true });
  });

/** The raw log endpoint of an attempt. */
export function logUrl(executionId, attemptId, offset = 0) {
  return `/api/v1/executions/${enc(executionId)}/logs/${enc(attemptId)}?offset=${offset}`;
}

/**
 * Reads the log into `buffer`: 1 MiB at a time while there is more, then long-polls
 * while the attempt runs. Calls `onData(state)` after each response; resolves with
 * the final state ("complete" or "incomplete") once the attempt has ended and every
 * byte has been read.
 */
async function readLog(executionId, attemptId, buffer, onData, onError, signal) {
  let offset = 0;
  let caughtUp = false;
  let failures = 0;
  while (!signal.aborted) {
    const started = Date.now();
    let response;
    try {
      response = await fetch(`${logUrl(executionId, attemptId, offset)}${caughtUp ? '&wait=25' : ''}`, {
        credentials: 'same-origin',
        headers: { Accept: 'text/plain' },
        signal,
      });
      if (response.status === 401) window.dispatchEvent(new CustomEvent('sluice:signed-out'));
      if (!response.ok) {
        let message = `HTTP ${response.status}`;
        try {
          message = (await response.json()).message || message;
        } catch {
          // Not JSON.
        }
        if (response.status === 404 || response.status === 401 || response.status === 403) {
          onError(message, true);
          return null;
        }
        throw new Error(message);
      }
      const bytes = new Uint8Array(await response.arrayBuffer());
      const state = response.headers.get('x-log-state') || 'running';
      const next = Number(response.headers.get('x-log-next-offset'));
      failures = 0;
      // Index a large answer in slices, yielding between them, so no task is long.
      for (let at = 0; at < bytes.length; at += SLICE) {
        if (at > 0) await sleep(0);
        if (signal.aborted) return null;
        buffer.push(bytes.subarray(at, Math.min(bytes.length, at + SLICE)));
      }
      offset = Number.isFinite(next) && next >= offset + bytes.length ? next : offset + bytes.length;
      if (bytes.length === 0 && state !== 'running') {
        buffer.finish();
        onData(state);
        return state;
      }
      onData(state);
      caughtUp = bytes.length === 0;
      // An empty answer that came back at once (the attempt changed state): pause.
      if (caughtUp && Date.now() - started < 500) await sleep(500, signal);
    } catch (e) {
      if (signal.aborted) return null;
      failures++;
      onError(`Could not read the log (${e.message}); retrying…`, false);
      await sleep(Math.min(30_000, 1000 * 2 ** Math.min(failures, 5)), signal);
    }
  }
  return null;
}

/** Downloads the whole log (every chunk) as one file, byte for byte. */
async function downloadAll(executionId, attemptId, fileName) {
  const parts = [];
  let offset = 0;
  for (;;) {
    const response = await fetch(logUrl(executionId, attemptId, offset), { credentials: 'same-origin' });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const bytes = new Uint8Array(await response.arrayBuffer());
    if (bytes.length === 0) break;
    parts.push(bytes);
    offset += bytes.length;
  }
  const url = URL.createObjectURL(new Blob(parts, { type: 'text/plain' }));
  const a = document.createElement('a');
  a.href = url;
  a.download = fileName;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

function size(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1 << 20) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / (1 << 20)).toFixed(1)} MB`;
}

// ---- the view ----------------------------------------------------------------------

/** Where line `index` (0-based) is, given the scroll geometry. */
function geometry(total, viewHeight) {
  const natural = total * LINE_HEIGHT;
  const height = Math.min(natural, MAX_HEIGHT);
  const scaled = natural > MAX_HEIGHT;
  const maxScroll = Math.max(0, height - viewHeight);
  const maxPos = Math.max(0, total - viewHeight / LINE_HEIGHT);
  return {
    height,
    /** The (fractional) line at the top of the view for a scroll position. */
    position: (scrollTop) => (scaled ? (maxScroll ? (scrollTop / maxScroll) * maxPos : 0) : scrollTop / LINE_HEIGHT),
    /** The scroll position that puts (fractional) line `pos` at the top. */
    scrollFor: (pos) => {
      const p = Math.max(0, Math.min(pos, maxPos));
      return scaled ? (maxPos ? (p / maxPos) * maxScroll : 0) : p * LINE_HEIGHT;
    },
  };
}

/** A line's segments with search matches marked. */
function LineText({ raw, query, current }) {
  let segments = ansiSegments(raw.length > MAX_SHOWN * 2 ? raw.slice(0, MAX_SHOWN * 2) : raw);
  let shown = 0;
  let cut = 0;
  const limited = [];
  for (const s of segments) {
    if (shown >= MAX_SHOWN) {
      cut += s.text.length;
      continue;
    }
    const text = s.text.length + shown > MAX_SHOWN ? s.text.slice(0, MAX_SHOWN - shown) : s.text;
    cut += s.text.length - text.length;
    shown += text.length;
    limited.push({ text, cls: s.cls });
  }
  segments = limited;
  const truncated = cut > 0 || raw.length > MAX_SHOWN * 2;
  const plain = segments.map((s) => s.text).join('');
  const matches = query ? findAll(plain, query) : [];
  const out = [];
  let pos = 0;
  for (const s of segments) {
    const end = pos + s.text.length;
    let at = pos;
    // Split the segment where matches start and end.
    for (const m of matches) {
      const mEnd = m + query.length;
      if (mEnd <= at || m >= end) continue;
      if (m > at) out.push(html`<span class=${s.cls || undefined}>${s.text.slice(at - pos, m - pos)}</span>`);
      const from = Math.max(m, at);
      const to = Math.min(mEnd, end);
      out.push(html`<mark class=${`log-match${m === current ? ' current' : ''}${s.cls ? ` ${s.cls}` : ''}`}
        data-test=${m === current ? 'log-match-current' : 'log-match'}>${s.text.slice(from - pos, to - pos)}</mark>`);
      at = to;
    }
    if (at < end) out.push(s.cls ? html`<span class=${s.cls}>${s.text.slice(at - pos)}</span>` : s.text.slice(at - pos));
    pos = end;
  }
  if (truncated) out.push(html`<span class="log-cut" title="Download the log to see the whole line"> … (line cut)</span>`);
  return out;
}

/**
 * One attempt's log. Props: executionId, attemptId, log (the attempt's log row:
 * storedLength, complete…), running (whether the attempt may still write), line (a
 * 1-based line to show and highlight), lineHref(n) (the address of line n), fileName.
 */
export function LogView({ executionId, attemptId, log, running, line, lineHref, fileName }) {
  const buffer = useMemo(() => new LogBuffer(), [executionId, attemptId]);
  const [, setVersion] = useState(0);
  // x-log-state of the last response, and whether the whole log has been read.
  const [state, setState] = useState('loading');
  const [done, setDone] = useState(false);
  const [error, setError] = useState('');
  // Follow the end of a running log unless a line is linked; a finished log opens at
  // its start.
  const [follow, setFollow] = useState(!line && !!running);
  const [view, setView] = useState({ top: 0, height: 400 });
  const [query, setQuery] = useState('');
  const [typed, setTyped] = useState('');
  const [search, setSearch] = useState(null);
  const [matchIndex, setMatchIndex] = useState(-1);
  const [downloading, setDownloading] = useState('');
  const scroller = useRef(null);
  const frame = useRef(0);
  const shownLine = useRef(0);

  // Re-render at most once per frame, however fast chunks arrive.
  const refresh = () => {
    if (frame.current) return;
    frame.current = requestAnimationFrame(() => {
      frame.current = 0;
      setVersion((v) => v + 1);
    });
  };

  useEffect(() => {
    const controller = new AbortController();
    readLog(
      executionId,
      attemptId,
      buffer,
      (s) => {
        setError('');
        setState(s);
        refresh();
      },
      (message, fatal) => {
        setError(message);
        if (fatal) setState('error');
      },
      controller.signal,
    ).then((final) => {
      if (final) setDone(true);
    });
    return () => {
      controller.abort();
      cancelAnimationFrame(frame.current);
      frame.current = 0;
    };
  }, [executionId, attemptId]);

  // Search: debounced as one types; extends itself as the log grows.
  useEffect(() => {
    const timer = setTimeout(() => setQuery(typed), 200);
    return () => clearTimeout(timer);
  }, [typed]);
  useEffect(() => {
    if (!query) {
      setSearch(null);
      setMatchIndex(-1);
      return undefined;
    }
    const s = new Search(buffer, query, refresh);
    setSearch(s);
    setMatchIndex(-1);
    s.resume();
    return () => s.cancel();
  }, [query, buffer]);
  useEffect(() => {
    search?.resume();
  });

  const total = buffer.lines;
  const geo = geometry(total, view.height);

  // Keep the view's size and position in state; follow the end while at the end.
  useLayoutEffect(() => {
    const el = scroller.current;
    if (!el) return undefined;
    const measure = () => setView({ top: el.scrollTop, height: el.clientHeight || 400 });
    measure();
    const observer = typeof ResizeObserver === 'function' ? new ResizeObserver(measure) : null;
    observer?.observe(el);
    return () => observer?.disconnect();
  }, []);
  useLayoutEffect(() => {
    const el = scroller.current;
    if (el && follow) el.scrollTop = el.scrollHeight;
  });
  const onScroll = () => {
    const el = scroller.current;
    if (!el) return;
    const atEnd = el.scrollTop + el.clientHeight >= el.scrollHeight - LINE_HEIGHT * 2;
    if (follow !== atEnd && (running || !atEnd)) setFollow(atEnd);
    setView({ top: el.scrollTop, height: el.clientHeight || 400 });
  };

  const scrollToLine = (index) => {
    const el = scroller.current;
    if (!el) return;
    el.scrollTop = geo.scrollFor(index - view.height / LINE_HEIGHT / 2 + 0.5);
    setView({ top: el.scrollTop, height: el.clientHeight || 400 });
  };

  // A linked line: show it once it has arrived (and again when the link changes to a
  // line out of view).
  useLayoutEffect(() => {
    if (!line || line > total || shownLine.current === line) return;
    shownLine.current = line;
    setFollow(false);
    const pos = geo.position(view.top);
    const visible = view.height / LINE_HEIGHT;
    if (line - 1 < pos || line - 1 >= pos + visible - 1) scrollToLine(line - 1);
  });

  const goTo = (index) => {
    if (!search || search.count === 0) return;
    const i = ((index % search.count) + search.count) % search.count;
    setMatchIndex(i);
    setFollow(false);
    scrollToLine(search.lines[i]);
  };
  const step = (delta) => {
    if (!search || search.count === 0) return;
    if (matchIndex < 0) {
      // Start from the view: the first match below its top (or above, going back).
      const from = search.indexFrom(Math.floor(geo.position(view.top)));
      goTo(delta > 0 ? from : from - 1);
    } else goTo(matchIndex + delta);
  };
  const onSearchKey = (e) => {
    if (e.key === 'Enter') {
      e.preventDefault();
      setQuery(typed);
      step(e.shiftKey ? -1 : 1);
    } else if (e.key === 'Escape') {
      setTyped('');
      setQuery('');
    }
  };

  // The lines in view.
  const pos = geo.position(view.top);
  const first = Math.max(0, Math.floor(pos) - OVERSCAN);
  const last = Math.min(total, Math.floor(pos) + Math.ceil(view.height / LINE_HEIGHT) + OVERSCAN);
  const offsetTop = Math.max(0, view.top - (pos - first) * LINE_HEIGHT);
  // The search of the query shown (not one a new query is about to replace).
  const found = search && search.query === query.toLowerCase() ? search : null;
  const current = search && matchIndex >= 0 && matchIndex < search.count ? { line: search.lines[matchIndex], col: search.cols[matchIndex] } : null;
  const digits = String(Math.max(total, 1)).length;
  const lq = query.toLowerCase();
  const rows = [];
  for (let i = first; i < last; i++) {
    const n = i + 1;
    rows.push(html`<div key=${i} class=${`log-line${n === line ? ' selected' : ''}`} data-test="log-line" data-line=${n}>
      <a class="ln" href=${lineHref ? lineHref(n) : `#L${n}`} style=${{ width: `${digits + 1}ch` }}
        data-test="log-line-number" aria-label=${`Line ${n}`}>${n}</a>
      <span class="text"><${LineText} raw=${buffer.raw(i)} query=${lq} current=${current && current.line === i ? current.col : -1} /></span>
    </div>`);
  }

  const complete = done && state === 'complete' && log?.complete !== false;
  const incomplete = done && (state === 'incomplete' || log?.complete === false);
  const expected = log?.storedLength || 0;
  // Reading what is already stored (before tailing, or a finished attempt's log).
  const loading = !done && state !== 'error' && (state !== 'running' || buffer.bytes < expected);
  const shownState = done ? state : state === 'running' && !loading ? 'running' : state === 'error' ? 'error' : 'loading';
  const rawHref = logUrl(executionId, attemptId, 0);
  const large = Math.max(expected, buffer.bytes) > ONE_RESPONSE;
  const download = async (e) => {
    if (!large) return;
    e.preventDefault();
    setDownloading('Preparing the download…');
    try {
      await downloadAll(executionId, attemptId, fileName || `attempt-${attemptId}.log`);
      setDownloading('');
    } catch (err) {
      setDownloading(`Download failed: ${err.message}`);
    }
  };
  const searching = found && !found.done;

  return html`<div class="log-view" data-test="log-view" data-log-state=${shownState}>
    <div class="log-toolbar">
      <span class="log-state" data-test="log-state" role="status">
        ${shownState === 'running' && html`<span class="status tone-run small"><span class="icon" aria-hidden="true">◐</span>Live</span>`}
        ${loading && html`<span class="status tone-idle small"><span class="icon" aria-hidden="true">…</span>Loading</span>`}
        ${complete && html`<span class="status tone-ok small"><span class="icon" aria-hidden="true">✔</span>Complete</span>`}
        ${incomplete && html`<span class="status tone-warn small"><span class="icon" aria-hidden="true">⚠</span>Incomplete</span>`}
        <span class="muted small">${total.toLocaleString()} lines · ${size(buffer.bytes)}
          ${loading && expected > buffer.bytes ? ` of ${size(expected)}` : ''}</span>
        ${loading && expected > 0 && html`<progress class="log-progress" max=${expected} value=${buffer.bytes} aria-label="Log loaded"></progress>`}
      </span>
      <form class="log-search" role="search" onSubmit=${(e) => e.preventDefault()}>
        <label class="sr-only" for=${`log-search-${attemptId}`}>Search the log</label>
        <input id=${`log-search-${attemptId}`} type="search" placeholder="Search the log" value=${typed}
          data-test="log-search" onInput=${(e) => setTyped(e.target.value)} onKeyDown=${onSearchKey} />
        <span class="small muted" data-test="log-search-count" aria-live="polite">${typed || query
          ? found && found.count
            ? `${matchIndex >= 0 ? `${matchIndex + 1} of ` : ''}${found.count.toLocaleString()}${searching ? '+' : ''} match${found.count === 1 ? '' : 'es'}`
            : searching || !found || typed !== query ? 'Searching…' : 'No matches'
          : ''}</span>
        <button type="button" data-test="log-search-prev" aria-label="Previous match" title="Previous match (Shift+Enter)"
          disabled=${!found || !found.count} onClick=${() => step(-1)}>↑</button>
        <button type="button" data-test="log-search-next" aria-label="Next match" title="Next match (Enter)"
          disabled=${!found || !found.count} onClick=${() => step(1)}>↓</button>
      </form>
      <label class="log-follow small"><input type="checkbox" checked=${follow}
        onChange=${(e) => setFollow(e.target.checked)} data-test="log-follow" /> Follow</label>
      <a href=${rawHref} download=${fileName || `attempt-${attemptId}.log`} onClick=${download} data-test="log-download">Download</a>
    </div>
    ${incomplete && html`<p class="log-incomplete" role="alert" data-test="log-incomplete">
      <span aria-hidden="true">⚠ </span>This log is incomplete: ${log?.reportedLength != null
        ? `the agent reported ${size(log.reportedLength)} but only ${size(log.storedLength)} arrived.`
        : 'part of it never reached the controller.'}</p>`}
    ${error && html`<p class="error small" role="alert">${error}</p>`}
    ${downloading && html`<p class="small muted" role="status">${downloading}</p>`}
    <div class="log-scroll" ref=${scroller} onScroll=${onScroll} tabindex="0" aria-label="Log output" data-test="log-scroll">
      <div class="log-spacer" style=${{ height: `${geo.height}px` }}>
        <div class="log-window" style=${{ transform: `translateY(${offsetTop}px)` }}>${rows}</div>
      </div>
      ${total === 0 && html`<p class="log-empty muted">${loading ? 'Loading the log…' : !done ? 'No output yet.' : 'This attempt wrote no log.'}</p>`}
    </div>
  </div>`;
}
