// Identifiers of the wire contract (docs/protocol.md, "Identifiers"): job, user and topic
// ids, event types, correlation ids, idempotency keys and W3C `traceparent` values. The
// same rules as the `sse-wire` crate's `id.rs`; the shared fixtures hold them equal.

/** Longest job id, user id, topic name, correlation id or idempotency key accepted. */
export const MAX_ID_LENGTH = 128;

/**
 * Event types a gateway makes itself (`status`, `jobs`, `resync`); a publisher may not use
 * them. `error` is refused too: it collides with EventSource's own connection `error` event.
 */
export const RESERVED_TYPES: readonly string[] = ['status', 'jobs', 'resync', 'error'];

/** Event types that end a job. */
export const TERMINAL_TYPES: readonly string[] = ['complete', 'failed', 'cancelled'];

// JavaScript's `$` matches only at the end of the input (no `m` flag), so a trailing line
// break cannot slip through as it could with some other regex engines.
const ID = /^[A-Za-z0-9._:-]{1,128}$/;
const EVENT_TYPE = /^[a-z][a-z0-9_.-]{0,63}$/;
// Printable ASCII: a correlation id is logged, so no control bytes.
const CORRELATION_ID = /^[\x20-\x7e]{1,128}$/;
// Visible ASCII (no space): the key is the last part of a Redis key.
const IDEMPOTENCY_KEY = /^[\x21-\x7e]{1,128}$/;
const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$/;

/** A job id, user id or topic name: 1–128 characters of `[A-Za-z0-9._:-]`. */
export function isValidId(id: unknown): id is string {
  return typeof id === 'string' && ID.test(id);
}

/** An event type: `[a-z][a-z0-9_.-]{0,63}`. */
export function isValidEventType(eventType: unknown): eventType is string {
  return typeof eventType === 'string' && EVENT_TYPE.test(eventType);
}

/** Whether a publisher may use this event type (valid and not reserved). */
export function isPublishableType(eventType: unknown): eventType is string {
  return isValidEventType(eventType) && !RESERVED_TYPES.includes(eventType);
}

/** Whether an event of this type ends its job. */
export function isTerminalType(eventType: string): boolean {
  return TERMINAL_TYPES.includes(eventType);
}

/** A correlation id: 1–128 printable ASCII characters. */
export function isValidCorrelationId(id: unknown): id is string {
  return typeof id === 'string' && CORRELATION_ID.test(id);
}

/** An idempotency key (`Idempotency-Key`): 1–128 visible ASCII characters. */
export function isValidIdempotencyKey(key: unknown): key is string {
  return typeof key === 'string' && IDEMPOTENCY_KEY.test(key);
}

/**
 * A W3C trace context `traceparent`: `00-<32 hex trace id>-<16 hex parent id>-<2 hex
 * flags>`, lowercase, with neither id all zeros.
 */
export function isValidTraceparent(value: unknown): value is string {
  if (typeof value !== 'string') {
    return false;
  }
  const match = TRACEPARENT.exec(value);
  const nonZero = (hex: string | undefined) => hex !== undefined && /[^0]/.test(hex);
  return match !== null && nonZero(match[1]) && nonZero(match[2]);
}

/** An event id, `<ms>-<seq>` (the form of a Redis Stream id). */
export function isValidEventId(id: unknown): id is string {
  return typeof id === 'string' && /^[0-9]{1,20}-[0-9]{1,20}$/.test(id);
}
