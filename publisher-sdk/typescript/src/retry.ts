// How a publisher retries an attempt that did not publish: exponential backoff with
// jitter, capped, for a bounded number of attempts.

/** How a publisher retries attempts that certainly did not publish (and, with an idempotency key, ambiguous ones). */
export interface RetryPolicy {
  /** Attempts in all, the first included (at least 1). */
  readonly attempts: number;
  /** The backoff before the second attempt; it doubles with each attempt after. */
  readonly initialBackoffMs: number;
  /** The longest backoff. */
  readonly maxBackoffMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = Object.freeze({
  attempts: 5,
  initialBackoffMs: 50,
  maxBackoffMs: 2000,
});

/** A complete policy from a partial one; `attempts` at least 1. */
export function retryPolicy(partial: Partial<RetryPolicy> = {}): RetryPolicy {
  const policy = { ...DEFAULT_RETRY, ...partial };
  return Object.freeze({
    attempts: Math.max(1, Math.floor(policy.attempts)),
    initialBackoffMs: Math.max(0, policy.initialBackoffMs),
    maxBackoffMs: Math.max(0, policy.maxBackoffMs),
  });
}

/**
 * The wait after failed attempt number `failed` (0 for the first): `initial · 2^failed`,
 * capped at `max`, of which a random half is taken off ("equal jitter"), so that many
 * publishers refused at once do not all come back at once. A server's `Retry-After` hint
 * raises it, up to `max`.
 */
export function backoffMs(
  policy: RetryPolicy,
  failed: number,
  hintMs: number | undefined = undefined,
  random: () => number = Math.random,
): number {
  const base = Math.min(policy.initialBackoffMs * 2 ** Math.min(failed, 30), policy.maxBackoffMs);
  const jittered = base / 2 + (random() * base) / 2;
  const hinted = hintMs === undefined ? 0 : Math.min(hintMs, policy.maxBackoffMs);
  return Math.max(jittered, hinted);
}
