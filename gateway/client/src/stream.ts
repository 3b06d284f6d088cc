// A job stream, the user stream or a topic stream (topics.ts makes its URL), read through
// fetch() and parsed by eventsource-parser.
//
// Why fetch and not EventSource, for the cookie too: EventSource never shows the status
// of an answer and stops for good on any non-200, so it cannot tell a finished job (204)
// from an expired session (401) from a full or draining node (429/503, which only need a
// later retry). Through fetch the client sees every status and `Retry-After`, sends
// `Last-Event-ID` itself on every attempt, and applies one policy (policy.ts) whether the
// token travels in a cookie (`credentials: 'include'`) or in `Authorization`.

import { createParser, type EventSourceMessage } from 'eventsource-parser';
import { DEFAULT_RETRY, decide, parseRetryAfter, retryDelay, type RetryOptions } from './policy.js';
import { compareIds, isFinished, TERMINAL_EVENTS, type JobStatus, type StreamEvent } from './state.js';

/** Where a stream is in its life. `finished`, `stopped` and `closed` are final. */
export type ConnectionState =
  /** The first attempt is under way. */
  | 'connecting'
  /** A `200` stream is being read. */
  | 'open'
  /** Between attempts: the stream ended, broke or was refused for now; the next attempt is scheduled. */
  | 'reconnecting'
  /** The job is over: its terminal event arrived, or the gateway answered `204`. */
  | 'finished'
  /** Refused for good (`401` after a refresh, `404`, …), or out of retries: see `error`. */
  | 'stopped'
  /** `close()` was called. */
  | 'closed';

/** A change of state, with what caused it. */
export interface StateChange {
  state: ConnectionState;
  /** The HTTP status behind the change, when an answer caused it. */
  status?: number;
  /** With `open`: this stream was open before (an automatic reconnection that resumed). */
  resumed?: boolean;
  /** With `reconnecting`: ms until the next attempt. */
  delayMs?: number;
  /** With `reconnecting` and `stopped`: what went wrong. */
  error?: StreamError;
}

/** Why an attempt failed: an HTTP status (and the gateway's error code), or a network error. */
export class StreamError extends Error {
  /** The HTTP status, or `null` for a network error or a broken stream. */
  readonly status: number | null;
  /** The gateway's error code (`token_expired`, `draining`, `not_found`, …), when it sent one. */
  readonly code: string | null;
  /** `Retry-After` in ms, when the answer had one. */
  readonly retryAfterMs: number | null;

  constructor(message: string, status: number | null = null, code: string | null = null, retryAfterMs: number | null = null) {
    super(message);
    this.name = 'StreamError';
    this.status = status;
    this.code = code;
    this.retryAfterMs = retryAfterMs;
  }
}

/** Counters of one stream's life, for status displays and tests. */
export interface StreamStats {
  /** Requests made. */
  attempts: number;
  /** `200` streams opened. */
  opens: number;
  /** Events delivered to listeners. */
  events: number;
  /** Events dropped because their id was not above the last one (the gateway sends none). */
  duplicates: number;
  /** Snapshots (`status`, `jobs`) and topic `resync` markers that arrived with `"resync": true`. */
  resyncs: number;
  /** Calls of `refreshToken()`. */
  refreshes: number;
  /** Events whose data was not JSON (dropped). */
  malformed: number;
}

/** A token, or a function that returns the current one (called before every attempt). */
export type TokenSource = string | (() => string | null | undefined | Promise<string | null | undefined>);

export interface StreamOptions {
  /** Base URL of the gateway (`https://sse.example.com`); default: this page's origin. */
  gateway?: string;
  /** Follow this job (`/v1/jobs/{job}/events`); without it, the user stream (`/v1/users/me/events`). */
  job?: string;
  /** A full stream URL instead of `gateway` and `job`. */
  url?: string;
  /**
   * A bearer token, sent as `Authorization` on every attempt. Without it the gateway's
   * cookie authenticates (the request is made with `credentials: 'include'`).
   */
  token?: TokenSource;
  /**
   * Called once on a `401` (the token expired, or no session yet); the stream then resumes
   * where it was. With `token`, return the new token (or update what `token` returns); with
   * the cookie, refresh the cookie (sign in again) and return nothing. A second `401` in a
   * row, or a throw, stops the stream.
   */
  refreshToken?: () => unknown;
  /**
   * Resume after this event id, as if a stream had delivered it: `'0-0'` asks a job or topic
   * stream for its whole retained history. Sent as `Last-Event-ID` from the first request.
   */
  lastEventId?: string | null;
  /** Backoff for failed attempts (see `RetryOptions`). */
  retry?: RetryOptions;
  /**
   * A stream that sends nothing for this long (no event, no heartbeat) is presumed dead and
   * reopened; it also bounds the wait for an answer. In ms; default 45000 (three of the
   * gateway's default 15 s heartbeats); 0 turns it off.
   */
  idleTimeoutMs?: number;
  /** The largest event accepted, in characters (a larger one stops the stream). Default 16 MiB. */
  maxEventChars?: number;
  /**
   * `fetch` credentials mode; default `'include'` for the cookie, `'same-origin'` with a
   * token (`'omit'` for an anonymous topic stream).
   */
  credentials?: RequestCredentials;
  /** The `fetch` to use (default: the global one). */
  fetch?: typeof fetch;
  /** Random numbers in [0, 1) for the jitter (default `Math.random`); for tests. */
  random?: () => number;
}

export interface SseStream {
  /** The stream's URL (without `Last-Event-ID`, which travels as a header). */
  readonly url: string;
  readonly state: ConnectionState;
  /**
   * Where the next attempt resumes: the id of the last event received, or of a later
   * id-only block (a topic stream opens with one at its live edge). Sent back verbatim.
   */
  readonly lastEventId: string | null;
  /** What stopped the stream, or the last failed attempt's cause. */
  readonly error: StreamError | null;
  readonly stats: Readonly<StreamStats>;
  /** Resolves with the final state: `finished`, `stopped` or `closed`. */
  readonly done: Promise<ConnectionState>;
  /** Listens to events of one type (`'progress'`, `'jobs'`, a custom type, …). Returns an unsubscribe function. */
  on<K extends string>(type: K, listener: (event: StreamEvent<K>) => void): () => void;
  /** Listens to every event (for a reducer). */
  onEvent(listener: (event: StreamEvent) => void): () => void;
  /** Listens to state changes. */
  onState(listener: (change: StateChange) => void): () => void;
  /** Stops the stream for good (aborts the request or the pending retry). */
  close(): void;
}

const DEFAULT_IDLE_TIMEOUT_MS = 45_000;
const DEFAULT_MAX_EVENT_CHARS = 16 * 1024 * 1024;
const MAX_ERROR_BODY_CHARS = 4096;

/** What one attempt came to. */
type Outcome =
  | { next: 'finished'; status?: number }
  | { next: 'stop'; error: StreamError }
  | { next: 'refresh'; error: StreamError }
  /** Failed before a stream opened: back off. */
  | { next: 'retry'; error: StreamError }
  /** A `200` stream ended or broke: reconnect after the server's `retry:`. */
  | { next: 'reconnect'; error?: StreamError }
  | { next: 'closed' };

/**
 * A job id or topic name as a path segment. Valid ones (`[A-Za-z0-9._:-]`) are all path
 * characters and go verbatim — the gateway does not percent-decode paths, so an escaped
 * `:` (`%3A`) would name another, invalid, id; anything else stays escaped (and is a `400`).
 */
export function pathSegment(id: string): string {
  return encodeURIComponent(id).replace(/%3A/gi, ':');
}

/** The stream URL for `options`. */
export function streamUrl(options: Pick<StreamOptions, 'gateway' | 'job' | 'url'>): string {
  if (options.url) { return options.url; }
  const base = (options.gateway || '').replace(/\/+$/, '');
  return options.job !== undefined
    ? `${base}/v1/jobs/${pathSegment(options.job)}/events`
    : `${base}/v1/users/me/events`;
}

/**
 * Opens a stream and keeps it open: it reconnects after the stream ends or breaks,
 * resuming after the last event id; backs off (honouring `Retry-After`) on 429, 503 and
 * network errors; refreshes the token once on 401; stops on 204, after a job's terminal
 * event, and on refusals that a retry cannot fix.
 */
export function openStream(options: StreamOptions = {}): SseStream {
  const url = streamUrl(options);
  const isJobStream = options.job !== undefined || /\/v1\/jobs\/[^/]+\/events(?:\?|$)/.test(url);
  const retry = { ...DEFAULT_RETRY, ...options.retry };
  const idleTimeoutMs = options.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
  const fetchImpl = options.fetch ?? ((input: RequestInfo | URL, init?: RequestInit) => fetch(input, init));
  const random = options.random ?? Math.random;

  const typed = new Map<string, Set<(event: StreamEvent) => void>>();
  const everyEvent = new Set<(event: StreamEvent) => void>();
  const stateListeners = new Set<(change: StateChange) => void>();
  const stats: StreamStats = { attempts: 0, opens: 0, events: 0, duplicates: 0, resyncs: 0, refreshes: 0, malformed: 0 };

  let state: ConnectionState = 'connecting';
  let lastEventId: string | null = options.lastEventId ?? null;
  let lastError: StreamError | null = null;
  let serverRetryMs: number | null = null;  // the stream's `retry:` field
  let token: string | null = null;          // set by refreshToken(), else read from options.token
  let closed = false;
  let request: AbortController | null = null;
  let wake: (() => void) | null = null;     // ends a pending retry delay early (close)
  let idleTimer: ReturnType<typeof setTimeout> | undefined;
  // Per stream: set while reading when the job reached its end.
  let terminal = false;
  let jobFinished = false;
  let tooLarge = false;
  let resolveDone!: (state: ConnectionState) => void;
  const done = new Promise<ConnectionState>((resolve) => { resolveDone = resolve; });

  function setState(change: StateChange): void {
    state = change.state;
    if (change.error) { lastError = change.error; }
    for (const listener of Array.from(stateListeners)) { call(listener, change); }
  }

  // A listener's exception must not end the stream; it is reported on its own.
  function call<T>(listener: (value: T) => void, value: T): void {
    try {
      listener(value);
    } catch (error) {
      queueMicrotask(() => { throw error; });
    }
  }

  // The `id:` of the block being parsed, until its event is seen. eventsource-parser calls
  // onId for every block with an id, then onEvent when the block has data too; a block
  // without data (the id-only block a topic stream opens with: `id: <live edge>`) has no
  // event, and its id is the stream's position all the same, as in EventSource. Without
  // it, a topic stream that breaks before its first event would reconnect fresh, at a
  // newer live edge, and miss what was published in between.
  let blockId: string | null = null;
  function takeBlockId(): void {
    // An empty `id:` resets EventSource's position; the gateway sends none, and the client
    // keeps its position (as for an event with an empty id).
    if (blockId && !closed && !terminal) { lastEventId = blockId; }
    blockId = null;
  }

  const parser = createParser({
    onId(id) { takeBlockId(); blockId = id; },
    onEvent(message) { blockId = null; dispatch(message); },
    onRetry(ms) { serverRetryMs = ms; },
    maxBufferSize: options.maxEventChars ?? DEFAULT_MAX_EVENT_CHARS,
    onError(error) {
      if (error.type === 'max-buffer-size-exceeded') {
        tooLarge = true;
        request?.abort();
      }
    },
  });

  function dispatch(message: EventSourceMessage): void {
    if (closed || terminal) { return; }
    const type = message.event || 'message';
    const id = message.id ? message.id : null;
    let data: unknown;
    try {
      data = JSON.parse(message.data);
    } catch {
      stats.malformed++;
      if (id !== null) { lastEventId = id; }
      return;
    }
    // Gateway-made events that state the position afresh: a job's `status`, the user's
    // `jobs`, a topic's `resync` marker. After a data loss their id can be lower than the
    // position the client asked for, so they are never dropped as duplicates.
    const snapshot = type === 'status' || type === 'jobs' || type === 'resync';
    if (!snapshot && id !== null && lastEventId !== null) {
      // Only `<ms>-<seq>` ids are ordered: compareIds answers null for anything else — the
      // composite ids of a stream of several topics (`t1.…`), which are opaque. Their
      // resumption is the gateway's (each topic after its own position, no duplicate), and
      // two of them cannot be compared as one stream's ids.
      const order = compareIds(id, lastEventId);
      if (order !== null && order <= 0) {
        stats.duplicates++;
        return;
      }
    }
    // A snapshot sets the position whatever it was: after a data loss its id can be lower.
    if (id !== null) { lastEventId = id; }
    if (snapshot && (data as { resync?: unknown } | null)?.resync === true) { stats.resyncs++; }
    stats.events++;
    const event = { type, id, data } as StreamEvent;
    for (const listener of Array.from(typed.get(type) ?? [])) { call(listener, event); }
    for (const listener of Array.from(everyEvent)) { call(listener, event); }
    if (isJobStream) {
      if (TERMINAL_EVENTS.includes(type)) { terminal = true; }
      if (type === 'status') { jobFinished = isFinished((data as { status?: JobStatus } | null)?.status as JobStatus); }
    }
  }

  function armIdle(controller: AbortController): void {
    clearTimeout(idleTimer);
    if (idleTimeoutMs > 0) {
      idleTimer = setTimeout(() => controller.abort(), idleTimeoutMs);
    }
  }

  async function headers(): Promise<Record<string, string>> {
    const result: Record<string, string> = { Accept: 'text/event-stream' };
    if (lastEventId !== null) { result['Last-Event-ID'] = lastEventId; }
    let bearer = token;
    if (bearer === null && options.token !== undefined) {
      bearer = (typeof options.token === 'function' ? await options.token() : options.token) ?? null;
    }
    if (bearer) { result.Authorization = `Bearer ${bearer}`; }
    return result;
  }

  async function attempt(): Promise<Outcome> {
    const controller = new AbortController();
    request = controller;
    stats.attempts++;
    let response: Response;
    try {
      const init: RequestInit = {
        headers: await headers(),
        cache: 'no-store',
        credentials: options.credentials ?? (options.token !== undefined ? 'same-origin' : 'include'),
        signal: controller.signal,
      };
      if (closed) { return { next: 'closed' }; }
      armIdle(controller);
      response = await fetchImpl(url, init);
    } catch (error) {
      clearTimeout(idleTimer);
      if (closed) { return { next: 'closed' }; }
      return { next: 'retry', error: new StreamError(`network error: ${(error as Error)?.message ?? error}`) };
    }
    const decision = decide(response.status, response.headers.get('content-type'));
    if (decision !== 'stream') {
      const retryAfterMs = parseRetryAfter(response.headers.get('retry-after'));
      const body = await response.text().catch(() => '');   // still bounded by the idle timer
      clearTimeout(idleTimer);
      if (closed) { return { next: 'closed' }; }
      let code: string | null = null;
      let text = `HTTP ${response.status}`;
      try {
        const parsed = JSON.parse(body.slice(0, MAX_ERROR_BODY_CHARS));
        if (typeof parsed.error === 'string') { code = parsed.error; }
        if (typeof parsed.message === 'string') { text += `: ${parsed.message}`; }
      } catch { /* not the gateway's JSON error */ }
      const error = new StreamError(text, response.status, code, retryAfterMs);
      switch (decision) {
        case 'finished': return { next: 'finished', status: response.status };
        case 'refresh': return { next: 'refresh', error };
        case 'retry': return { next: 'retry', error };
        default: return { next: 'stop', error };
      }
    }
    return read(response, controller);
  }

  async function read(response: Response, controller: AbortController): Promise<Outcome> {
    stats.opens++;
    const resumed = stats.opens > 1;
    setState({ state: 'open', status: response.status, resumed });
    terminal = false;
    jobFinished = false;
    tooLarge = false;
    blockId = null;
    parser.reset();
    const decoder = new TextDecoder();
    let broken: StreamError | undefined;
    try {
      const reader = response.body!.getReader();
      try {
        for (;;) {
          const { done: ended, value } = await reader.read();
          if (ended) { break; }
          armIdle(controller);
          parser.feed(decoder.decode(value, { stream: true }));
          takeBlockId();
          if (terminal || closed || tooLarge) { break; }
        }
      } finally {
        if (terminal || closed || tooLarge) { controller.abort(); }
        reader.releaseLock();
      }
    } catch (error) {
      broken = new StreamError(controller.signal.aborted && !tooLarge
        ? 'no data within the idle timeout'
        : `stream broken: ${(error as Error)?.message ?? error}`);
    } finally {
      clearTimeout(idleTimer);
    }
    if (closed) { return { next: 'closed' }; }
    if (tooLarge) { return { next: 'stop', error: new StreamError('an event exceeded maxEventChars') }; }
    // After the terminal event the gateway ends the stream; a reconnection would only get 204.
    if (terminal || (!broken && jobFinished)) { return { next: 'finished' }; }
    return { next: 'reconnect', error: broken };
  }

  function sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => { wake = null; resolve(); }, ms);
      wake = () => { clearTimeout(timer); wake = null; resolve(); };
    });
  }

  function finish(final: ConnectionState, change: Omit<StateChange, 'state'> = {}): void {
    if (state === 'finished' || state === 'stopped' || state === 'closed') { return; }
    setState({ state: final, ...change });
    resolveDone(final);
  }

  async function run(): Promise<void> {
    let failures = 0;          // consecutive attempts that got no stream
    let refreshed = false;     // refreshToken() was called since the last stream opened
    if (closed) { return; }    // closed before it started
    setState({ state: 'connecting' });
    while (!closed) {
      const outcome = await attempt();
      if (closed || outcome.next === 'closed') { return; }
      switch (outcome.next) {
        case 'finished':
          finish('finished', outcome.status !== undefined ? { status: outcome.status } : {});
          return;
        case 'stop':
          finish('stopped', { status: outcome.error.status ?? undefined, error: outcome.error });
          return;
        case 'refresh':
          if (!options.refreshToken || refreshed) {
            finish('stopped', { status: 401, error: outcome.error });
            return;
          }
          refreshed = true;
          stats.refreshes++;
          setState({ state: 'reconnecting', status: 401, delayMs: 0, error: outcome.error });
          try {
            const fresh = await options.refreshToken();
            if (typeof fresh === 'string' && fresh) { token = fresh; }
          } catch (error) {
            finish('stopped', { status: 401, error: new StreamError(`refreshToken failed: ${(error as Error)?.message ?? error}`, 401) });
            return;
          }
          continue;
        case 'retry': {
          failures++;
          if (failures > retry.maxRetries) {
            finish('stopped', { status: outcome.error.status ?? undefined, error: outcome.error });
            return;
          }
          const base = { ...retry, initialDelayMs: serverRetryMs ?? retry.initialDelayMs };
          const delayMs = retryDelay(failures - 1, outcome.error.retryAfterMs, base, random);
          setState({ state: 'reconnecting', status: outcome.error.status ?? undefined, delayMs, error: outcome.error });
          await sleep(delayMs);
          continue;
        }
        case 'reconnect': {
          failures = 0;
          refreshed = false;
          const delayMs = serverRetryMs ?? retry.initialDelayMs;
          setState({ state: 'reconnecting', delayMs, ...(outcome.error ? { error: outcome.error } : {}) });
          await sleep(delayMs);
          continue;
        }
      }
    }
  }

  const stream: SseStream = {
    url,
    get state() { return state; },
    get lastEventId() { return lastEventId; },
    get error() { return lastError; },
    stats,
    done,
    on(type, listener) {
      let set = typed.get(type);
      if (!set) { set = new Set(); typed.set(type, set); }
      const entry = listener as (event: StreamEvent) => void;
      set.add(entry);
      return () => { set!.delete(entry); };
    },
    onEvent(listener) {
      everyEvent.add(listener);
      return () => { everyEvent.delete(listener); };
    },
    onState(listener) {
      stateListeners.add(listener);
      return () => { stateListeners.delete(listener); };
    },
    close() {
      if (closed) { return; }
      closed = true;
      clearTimeout(idleTimer);
      request?.abort();
      wake?.();
      finish('closed');
    },
  };
  // Started after the caller had a chance to add listeners (it sees `connecting` too).
  queueMicrotask(() => { void run(); });
  return stream;
}
