// What the client does with each answer, and how long it waits before the next attempt.
// Pure functions, so that the policy is tested on its own (test/policy.test.mjs).

/** Retry settings; every field has a default. */
export interface RetryOptions {
  /**
   * First delay after a failed attempt, in ms, before the server has sent `retry:`; once
   * it has, that value is the first delay. Default 1000.
   */
  initialDelayMs?: number;
  /** Ceiling of the exponential backoff (not of `Retry-After`), in ms. Default 30000. */
  maxDelayMs?: number;
  /**
   * Spread added on top of each delay, as a fraction of it: a delay `d` becomes a random
   * value in `[d, d × (1 + jitter)]`, never earlier than the server asked. Default 0.5.
   */
  jitter?: number;
  /** Consecutive failed attempts (no `200` stream) before the client stops. Default: no limit. */
  maxRetries?: number;
}

export const DEFAULT_RETRY: Required<RetryOptions> = {
  initialDelayMs: 1000,
  maxDelayMs: 30_000,
  jitter: 0.5,
  maxRetries: Infinity,
};

/** What to do with an HTTP answer to a stream request. */
export type Decision =
  /** `200` with `text/event-stream`: read it. */
  | 'stream'
  /** `204`: the job is finished and the client has seen its end. Stop. */
  | 'finished'
  /** `401`: the token is missing, invalid or expired. Refresh it once, else stop. */
  | 'refresh'
  /** `429`, `503` (node full, draining, broker down), other transient errors: back off and retry. */
  | 'retry'
  /** Anything else (`400`, `403`, `404`, …): retrying cannot help. Stop. */
  | 'stop';

/** The decision for a response status (and its content type, for a `200`). */
export function decide(status: number, contentType: string | null): Decision {
  if (status === 200) {
    return /^text\/event-stream\b/i.test(contentType || '') ? 'stream' : 'stop';
  }
  if (status === 204) { return 'finished'; }
  if (status === 401) { return 'refresh'; }
  // 408/425: a proxy's timeouts; 429: too many streams for the user on that node; 5xx:
  // a draining or full node, a broker outage, or a load balancer between two nodes.
  if (status === 408 || status === 425 || status === 429 || (status >= 500 && status <= 599)) {
    return 'retry';
  }
  return 'stop';
}

/**
 * `Retry-After` in ms: delta-seconds or an HTTP date (relative to `now`); `null` when
 * absent or unreadable.
 */
export function parseRetryAfter(value: string | null, now: number = Date.now()): number | null {
  if (value === null) { return null; }
  const text = value.trim();
  if (/^\d+$/.test(text)) { return Number(text) * 1000; }
  // An HTTP date names its day and month ("Wed, 21 Oct 2015 07:28:00 GMT").
  const date = /[A-Za-z]{3}/.test(text) ? Date.parse(text) : NaN;
  return Number.isNaN(date) ? null : Math.max(0, date - now);
}

/**
 * The delay before retry number `attempt` (0 for the first retry after a failure): an
 * exponential backoff from `initialDelayMs`, capped at `maxDelayMs`, raised to
 * `Retry-After` when the server sent one, then spread by `jitter` upwards — so a node that
 * asked for a second is never hit sooner, and the clients it turned away do not all
 * return at the same instant.
 */
export function retryDelay(
  attempt: number,
  retryAfterMs: number | null,
  options: Required<RetryOptions>,
  random: () => number = Math.random,
): number {
  const backoff = Math.min(options.maxDelayMs, options.initialDelayMs * 2 ** Math.min(attempt, 30));
  const base = Math.max(backoff, retryAfterMs ?? 0);
  return Math.round(base * (1 + options.jitter * random()));
}
