// One event, checked against the wire contract and ready for a transport. Every check
// runs before anything is sent, in the order every publisher (and the shared fixtures)
// uses: ids, type, data, reopen, correlation id, traceparent, idempotency key, fields.

import { InvalidArgumentError } from './errors.js';
import {
  isPublishableType,
  isValidCorrelationId,
  isValidId,
  isValidIdempotencyKey,
  isValidTraceparent,
  statePatch,
  type JsonObject,
} from './wire/index.js';

/** Per-event options. */
export interface EventOptions {
  /**
   * Carried in the event (`correlationId`) and logged by gateways, to trace an event from
   * worker to browser: 1–128 printable ASCII characters.
   */
  readonly correlationId?: string | undefined;
  /** W3C trace context carried in the event, so the gateways continue the publisher's trace. */
  readonly traceparent?: string | undefined;
  /**
   * A repeat of a publish with the same key (per user or topic) within the idempotency
   * window (10 minutes) publishes nothing and returns the first event's id — so an attempt
   * whose outcome is unknown can be retried safely. 1–128 visible ASCII characters.
   */
  readonly idempotencyKey?: string | undefined;
  /**
   * Publish to a finished job, reopening it (back to `queued`, result and error cleared).
   * Without it a finished job refuses every event (`JobFinishedError`). Job events only.
   */
  readonly reopen?: boolean | undefined;
}

/** Where an event goes. */
export type Target =
  | { readonly kind: 'job'; readonly job: string; readonly owner: string }
  | { readonly kind: 'user'; readonly user: string }
  | { readonly kind: 'topic'; readonly topic: string };

/** A checked event. */
export interface Draft {
  readonly target: Target;
  readonly eventType: string;
  /** The fields as JSON sees them (see `fieldsOf`). */
  readonly fields: JsonObject;
  /** The state fields a job event sets (empty for other targets). */
  readonly patch: ReadonlyArray<readonly [string, string]>;
  readonly options: {
    readonly correlationId?: string | undefined;
    readonly traceparent?: string | undefined;
    readonly idempotencyKey?: string | undefined;
    readonly reopen: boolean;
  };
}

/** The id of a draft's subject: the job, user or topic it is about. */
export function subjectId(target: Target): string {
  return target.kind === 'job' ? target.job : target.kind === 'user' ? target.user : target.topic;
}

const invalid = (code: ConstructorParameters<typeof InvalidArgumentError>[0], message: string, cause?: unknown) =>
  new InvalidArgumentError(code, message, cause === undefined ? undefined : { cause });

/**
 * An event's fields as JSON sees them: what `JSON.stringify` keeps of `data` (a `Date`
 * becomes its ISO text, `undefined` members go, a non-finite number becomes `null`), so
 * the fields checked are exactly the fields sent. `null` or absent `data` is no fields.
 */
function fieldsOf(data: unknown): JsonObject {
  if (data === undefined || data === null) {
    return {};
  }
  if (typeof data !== 'object' || Array.isArray(data)) {
    throw invalid('invalid_body', `event data must be a JSON object, not ${Array.isArray(data) ? 'an array' : typeof data}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(JSON.stringify(data));
  } catch (error) {
    throw invalid('invalid_body', `event data is not JSON: ${(error as Error).message}`, error);
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw invalid('invalid_body', 'event data must be a JSON object');
  }
  return parsed as JsonObject;
}

/** Checks an event; throws `InvalidArgumentError` (with the gateway's code) on the first rule it breaks. */
export function draft(target: Target, eventType: unknown, data: unknown, options: EventOptions = {}): Draft {
  const ids: Array<[string, unknown]> =
    target.kind === 'job'
      ? [['job', target.job], ['owner', target.owner]]
      : target.kind === 'user'
        ? [['user', target.user]]
        : [['topic', target.topic]];
  for (const [what, id] of ids) {
    if (!isValidId(id)) {
      throw invalid('invalid_id', `${what} id ${JSON.stringify(id)} is not 1-128 characters of [A-Za-z0-9._:-]`);
    }
  }
  if (!isPublishableType(eventType)) {
    throw invalid(
      'invalid_type',
      `event type ${JSON.stringify(eventType)} must match [a-z][a-z0-9_.-]{0,63} and not be status, jobs, resync or error`,
    );
  }
  const fields = fieldsOf(data);
  const reopen = options.reopen === true;
  if (reopen && target.kind !== 'job') {
    throw invalid('invalid_body', 'reopen applies to job events only');
  }
  const { correlationId, traceparent, idempotencyKey } = options;
  if (correlationId !== undefined && !isValidCorrelationId(correlationId)) {
    throw invalid('invalid_body', 'correlation id must be 1-128 printable ASCII characters');
  }
  if (traceparent !== undefined && !isValidTraceparent(traceparent)) {
    throw invalid(
      'invalid_traceparent',
      `traceparent ${JSON.stringify(traceparent)} is not a W3C trace context (00-<32 hex>-<16 hex>-<2 hex>)`,
    );
  }
  if (idempotencyKey !== undefined && !isValidIdempotencyKey(idempotencyKey)) {
    throw invalid('invalid_idempotency_key', 'idempotency key must be 1-128 visible ASCII characters');
  }
  let patch: ReadonlyArray<readonly [string, string]> = [];
  if (target.kind === 'job') {
    const result = statePatch(eventType, fields);
    if (result === 'missing_progress') {
      throw invalid('invalid_event', 'a progress event needs a numeric "progress" field from 0 to 100');
    }
    if (result === 'progress_out_of_range') {
      throw invalid('invalid_event', '"progress" must be a number from 0 to 100');
    }
    patch = result;
  }
  return {
    target,
    eventType,
    fields,
    patch,
    options: { correlationId, traceparent, idempotencyKey, reopen },
  };
}
