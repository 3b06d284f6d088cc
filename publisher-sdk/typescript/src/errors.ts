// Why a publish failed: one class per kind, all `PublishError`s, told apart with
// `instanceof` or by `kind`. Each kind says whether the event may have been published and
// whether trying again later may help (`isTransient()`).

/** The kinds of `PublishError`. */
export type PublishErrorKind =
  | 'invalid_argument'
  | 'owner_conflict'
  | 'job_finished'
  | 'unauthorized'
  | 'rejected'
  | 'unavailable'
  | 'ambiguous'
  | 'internal';

/** Which rule an `InvalidArgumentError` breaks: the gateway's `400` code for the same input. */
export type InvalidArgumentCode =
  | 'invalid_id'
  | 'invalid_type'
  | 'invalid_body'
  | 'invalid_event'
  | 'invalid_idempotency_key'
  | 'invalid_traceparent'
  | 'invalid_url';

export abstract class PublishError extends Error {
  abstract readonly kind: PublishErrorKind;

  /** Whether trying again later may succeed (`unavailable`, `ambiguous`). */
  isTransient(): boolean {
    switch (this.kind) {
      case 'unavailable':
      case 'ambiguous':
        return true;
      case 'invalid_argument':
      case 'owner_conflict':
      case 'job_finished':
      case 'unauthorized':
      case 'rejected':
      case 'internal':
        return false;
    }
  }
}

/** An argument breaks the wire contract (bad id, type, field, option); nothing was sent. */
export class InvalidArgumentError extends PublishError {
  readonly kind = 'invalid_argument' as const;
  override readonly name = 'InvalidArgumentError';

  constructor(
    readonly code: InvalidArgumentCode,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/** The job is registered to another owner; nothing was published. */
export class OwnerConflictError extends PublishError {
  readonly kind = 'owner_conflict' as const;
  override readonly name = 'OwnerConflictError';

  constructor(readonly job: string) {
    super(`job ${job} belongs to another owner`);
  }
}

/**
 * The job has ended (a terminal event was published); nothing was published. Only an
 * event with `reopen: true` may follow.
 */
export class JobFinishedError extends PublishError {
  readonly kind = 'job_finished' as const;
  override readonly name = 'JobFinishedError';

  constructor(readonly job: string) {
    super(`job ${job} has finished; publish with reopen to start it again`);
  }
}

/** The gateway refused the credentials (`401`/`403`). */
export class UnauthorizedError extends PublishError {
  readonly kind = 'unauthorized' as const;
  override readonly name = 'UnauthorizedError';

  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(`not allowed to publish (${status} ${code}): ${message}`);
  }
}

/** The gateway refused the event with another `4xx`: its status, code and message. */
export class RejectedError extends PublishError {
  readonly kind = 'rejected' as const;
  override readonly name = 'RejectedError';

  constructor(
    readonly status: number,
    readonly code: string,
    readonly detail: string,
  ) {
    super(`rejected (${status} ${code}): ${detail}`);
  }
}

/** The broker or gateway could not be reached, after every retry; nothing was published. */
export class UnavailableError extends PublishError {
  readonly kind = 'unavailable' as const;
  override readonly name = 'UnavailableError';

  constructor(
    readonly attempts: number,
    detail: string,
    options?: ErrorOptions,
  ) {
    super(`unavailable after ${attempts} attempt(s): ${detail}`, options);
  }
}

/**
 * The event may or may not have been published: the connection broke, or the answer did
 * not come in time, after the request was sent. Retried automatically only when the event
 * has an idempotency key (a repeat then cannot publish twice); otherwise returned at once.
 */
export class AmbiguousError extends PublishError {
  readonly kind = 'ambiguous' as const;
  override readonly name = 'AmbiguousError';

  constructor(detail: string, options?: ErrorOptions) {
    super(`outcome unknown: ${detail}`, options);
  }
}

/**
 * The broker or gateway failed on its side and knows it (a gateway's `500 internal`, an
 * error reply from Redis such as a script error or `OOM`); not retried.
 */
export class InternalError extends PublishError {
  readonly kind = 'internal' as const;
  override readonly name = 'InternalError';

  constructor(detail: string, options?: ErrorOptions) {
    super(`server error: ${detail}`, options);
  }
}

/**
 * An attempt that certainly did not publish and may succeed later (connection refused,
 * Redis loading or failing over, a gateway's `503`): the publisher retries it with backoff
 * and, when attempts run out, reports `UnavailableError`. Not exported from the package.
 */
export class Refused extends Error {
  override readonly name = 'Refused';

  constructor(
    message: string,
    /** A server's hint (`Retry-After`) of when to try again. */
    readonly retryAfterMs?: number,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}
