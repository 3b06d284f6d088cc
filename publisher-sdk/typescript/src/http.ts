// The HTTP transport: `POST /v1/jobs/{job}/events`, `/v1/users/{user}/events` and
// `/v1/topics/{topic}/events` on a gateway (docs/protocol.md, "HTTP API"), with a token
// whose role is `publisher`, over Node's built-in `fetch`. What a gateway on the embedded
// broker offers; a gateway on Redis offers it too.

import type { Draft } from './draft.js';
import {
  AmbiguousError,
  InternalError,
  InvalidArgumentError,
  JobFinishedError,
  OwnerConflictError,
  PublishError,
  Refused,
  RejectedError,
  UnauthorizedError,
} from './errors.js';
import { subjectId } from './draft.js';
import type { BatchAnswer } from './redis.js';
import { isValidEventId } from './wire/index.js';

/** Largest answer read from a gateway. */
const MAX_RESPONSE_BYTES = 64 * 1024;

/** The request of one publish, before the token is added. */
export interface PublishRequest {
  readonly method: 'POST';
  /** `/v1/jobs/<job>/events` and the like; ids are valid, so they need no escaping. */
  readonly path: string;
  /** `Idempotency-Key` and `traceparent`, when the event has them. */
  readonly headers: Record<string, string>;
  /** The JSON body: `owner` (job events), `type`, `data`, `correlationId`, `reopen`. */
  readonly body: string;
}

/** The HTTP request of a checked event. */
export function requestOf(draft: Draft): PublishRequest {
  const { target, options } = draft;
  const path =
    target.kind === 'job'
      ? `/v1/jobs/${target.job}/events`
      : target.kind === 'user'
        ? `/v1/users/${target.user}/events`
        : `/v1/topics/${target.topic}/events`;
  // Key order as the gateway's own serializer writes the body (the fixtures' `http.body`).
  const body: Record<string, unknown> = {};
  if (target.kind === 'job') {
    body['owner'] = target.owner;
  }
  body['type'] = draft.eventType;
  body['data'] = draft.fields;
  if (options.correlationId !== undefined) {
    body['correlationId'] = options.correlationId;
  }
  if (options.reopen) {
    body['reopen'] = true;
  }
  const headers: Record<string, string> = {};
  if (options.idempotencyKey !== undefined) {
    headers['Idempotency-Key'] = options.idempotencyKey;
  }
  if (options.traceparent !== undefined) {
    headers['traceparent'] = options.traceparent;
  }
  return { method: 'POST', path, headers, body: JSON.stringify(body) };
}

/** Most events in one `POST /v1/events:batch` (the gateway's default `--max-batch-events`). */
export const MAX_EVENTS_PER_REQUEST = 100;
/**
 * Most bytes of body in one `POST /v1/events:batch` (the gateway's default
 * `--max-body-bytes`); an event larger by itself goes alone. A gateway refuses a body over
 * its limit before reading it, and a client still sending may then see the connection
 * reset instead of the `413`, leaving every event of the request unknown.
 */
export const MAX_BYTES_PER_REQUEST = 64 * 1024;

/** A `POST /v1/events:batch` element: target, the single publish's body, idempotency key. */
export function elementOf(draft: Draft): Record<string, unknown> {
  const { target, options } = draft;
  const element: Record<string, unknown> = {};
  if (target.kind === 'job') element['job'] = target.job;
  else if (target.kind === 'user') element['user'] = target.user;
  else element['topic'] = target.topic;
  if (target.kind === 'job') element['owner'] = target.owner;
  element['type'] = draft.eventType;
  element['data'] = draft.fields;
  if (options.correlationId !== undefined) element['correlationId'] = options.correlationId;
  if (options.reopen) element['reopen'] = true;
  if (options.idempotencyKey !== undefined) element['idempotencyKey'] = options.idempotencyKey;
  return element;
}

/**
 * The indexes of `drafts` as the requests that carry them, in order: runs of events with
 * the same traceparent (the request's header), each within the two limits above.
 */
export function batchRequests(drafts: readonly Draft[]): number[][] {
  const requests: number[][] = [];
  let size = 0;
  drafts.forEach((draft, index) => {
    const length = Buffer.byteLength(JSON.stringify(elementOf(draft))) + 1;
    const current = requests[requests.length - 1];
    const first = current === undefined ? undefined : drafts[current[0] ?? 0];
    if (
      current !== undefined &&
      current.length < MAX_EVENTS_PER_REQUEST &&
      size + length < MAX_BYTES_PER_REQUEST &&
      first?.options.traceparent === draft.options.traceparent
    ) {
      current.push(index);
      size += length;
    } else {
      requests.push([index]);
      size = length + 1;
    }
  });
  return requests;
}

/** Network failures after which the request certainly never reached the gateway. */
const NOT_CONNECTED = new Set([
  'ECONNREFUSED',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EADDRNOTAVAIL',
  'UND_ERR_CONNECT_TIMEOUT',
]);

/** The code of a `fetch` failure (`TypeError: fetch failed` with a cause, often nested). */
function networkCode(error: unknown): string | undefined {
  let current: unknown = error;
  for (let depth = 0; depth < 4 && current !== null && typeof current === 'object'; depth += 1) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === 'string') {
      return code;
    }
    const errors = (current as { errors?: unknown }).errors;
    if (Array.isArray(errors) && errors.length > 0) {
      current = errors[0];
      continue;
    }
    current = (current as { cause?: unknown }).cause;
  }
  return undefined;
}

/** `Retry-After` in seconds (the gateway's form) as milliseconds. */
function retryAfterMs(value: string | null): number | undefined {
  if (value === null || !/^[0-9]{1,6}$/.test(value.trim())) {
    return undefined;
  }
  return Number(value.trim()) * 1000;
}

/** Reads at most `MAX_RESPONSE_BYTES` of a response body as text. */
async function boundedText(response: Response): Promise<string> {
  if (response.body === null) {
    return '';
  }
  // Node's types leave the chunk type open; a fetch body's chunks are bytes.
  const reader = response.body.getReader() as ReadableStreamDefaultReader<Uint8Array>;
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    size += value.byteLength;
    if (size >= MAX_RESPONSE_BYTES) {
      await reader.cancel();
      break;
    }
  }
  return Buffer.concat(chunks).subarray(0, MAX_RESPONSE_BYTES).toString('utf8');
}

export interface HttpTransportConfig {
  /** How long one attempt may take, answer included. */
  readonly timeoutMs: number;
}

export class HttpTransport {
  /** The gateway's URL without a trailing slash. */
  private readonly base: string;
  private readonly authorization: string;

  constructor(
    gatewayUrl: string,
    token: string,
    private readonly config: HttpTransportConfig,
  ) {
    let url: URL;
    try {
      url = new URL(gatewayUrl);
    } catch (error) {
      throw new InvalidArgumentError('invalid_url', `${JSON.stringify(gatewayUrl)} is not a URL like http://127.0.0.1:8080`, {
        cause: error,
      });
    }
    if ((url.protocol !== 'http:' && url.protocol !== 'https:') || url.hostname === '' || url.search !== '' || url.hash !== '') {
      throw new InvalidArgumentError(
        'invalid_url',
        `${JSON.stringify(gatewayUrl)}: the HTTP transport needs an http:// or https:// URL of a gateway, without query or fragment`,
      );
    }
    if (typeof token !== 'string' || token === '' || /[\s]/.test(token)) {
      throw new InvalidArgumentError('invalid_body', 'the token must be a non-empty string without spaces');
    }
    this.base = url.href.replace(/\/+$/, '');
    this.authorization = `Bearer ${token}`;
  }

  async publish(draft: Draft): Promise<string> {
    const request = requestOf(draft);
    let response: Response;
    try {
      response = await fetch(`${this.base}${request.path}`, {
        method: request.method,
        headers: {
          authorization: this.authorization,
          'content-type': 'application/json',
          ...request.headers,
        },
        body: request.body,
        redirect: 'manual',
        signal: AbortSignal.timeout(this.config.timeoutMs),
      });
    } catch (error) {
      const code = networkCode(error);
      if (code !== undefined && NOT_CONNECTED.has(code)) {
        // Not connected: the request never left.
        throw new Refused(`gateway: ${code}`, undefined, { cause: error });
      }
      const detail = (error as Error).name === 'TimeoutError' ? `no answer within ${this.config.timeoutMs} ms` : (code ?? String(error));
      throw new AmbiguousError(`gateway: ${detail}`, { cause: error });
    }
    let text: string;
    try {
      text = await boundedText(response);
    } catch (error) {
      // The status is known but the answer broke off; for a 2xx the id is lost.
      text = '';
      if (response.ok) {
        throw new AmbiguousError(`gateway answered ${response.status} but the body broke off`, { cause: error });
      }
    }
    let answer: Record<string, unknown> = {};
    try {
      const parsed: unknown = JSON.parse(text);
      if (parsed !== null && typeof parsed === 'object') answer = parsed as Record<string, unknown>;
    } catch {
      // Not JSON (a proxy's page): the status alone decides.
    }
    const field = (key: string) => {
      const value = answer[key];
      return typeof value === 'string' ? value : '';
    };
    const failure = this.failure(draft, response.status, response.headers.get('retry-after'), field);
    if (failure !== undefined) {
      throw failure;
    }
    // 201: published; 200: a repeat of an idempotency key, with the first event's id.
    const id = answer['id'];
    if (isValidEventId(id)) {
      return id;
    }
    throw new AmbiguousError(`the gateway answered ${response.status} without an id`);
  }

  /** The error a non-2xx answer means, or `undefined` for a 2xx. */
  private failure(draft: Draft, status: number, retryAfter: string | null, field: (key: string) => string): PublishError | Refused | undefined {
    if (status === 200 || status === 201) {
      return undefined;
    }
    const code = field('error');
    const message = field('message');
    if (status === 409) {
      return code === 'job_finished' ? new JobFinishedError(subjectId(draft.target)) : new OwnerConflictError(subjectId(draft.target));
    }
    if (status === 401 || status === 403) {
      return new UnauthorizedError(status, code, message);
    }
    if (status === 503) {
      // The gateway refused before publishing (draining, at capacity, broker down).
      return new Refused(`gateway: 503 ${code}: ${message}`, retryAfterMs(retryAfter));
    }
    if (status >= 400 && status < 500) {
      return new RejectedError(status, code, message);
    }
    if (status === 500 && code === 'internal') {
      // The gateway failed on its side, knowing it did (a script or data error).
      return new InternalError(`gateway: ${message}`);
    }
    return new AmbiguousError(`the gateway answered ${status}`);
  }

  /**
   * Publishes events as `POST /v1/events:batch` requests (`batchRequests`), one after the
   * other; a request answered `413` is sent again in two halves, down to single events.
   * After a request that failed as a whole the rest is not sent (a later event must not
   * overtake an earlier one of its job) and counts as certainly unpublished.
   */
  async publishBatch(drafts: readonly Draft[]): Promise<BatchAnswer[]> {
    const answers: Array<BatchAnswer | undefined> = drafts.map(() => undefined);
    const pending = batchRequests(drafts);
    for (let indexes = pending.shift(); indexes !== undefined; indexes = pending.shift()) {
      const chosen = indexes.map((i) => drafts[i] as Draft);
      const headers: Record<string, string> = { authorization: this.authorization, 'content-type': 'application/json' };
      const traceparent = chosen[0]?.options.traceparent;
      if (traceparent !== undefined) headers['traceparent'] = traceparent;
      let failure: PublishError | Refused | undefined;
      let response: Response | undefined;
      let text = '';
      try {
        response = await fetch(`${this.base}/v1/events:batch`, {
          method: 'POST',
          headers,
          body: JSON.stringify(chosen.map(elementOf)),
          redirect: 'manual',
          signal: AbortSignal.timeout(this.config.timeoutMs),
        });
        text = await response.text();
      } catch (error) {
        const code = networkCode(error);
        failure =
          code !== undefined && NOT_CONNECTED.has(code)
            ? new Refused(`gateway: ${code}`, undefined, { cause: error })
            : new AmbiguousError(`gateway: ${code ?? String(error)}`, { cause: error });
      }
      if (response !== undefined && failure === undefined) {
        if (response.status === 413 && indexes.length > 1) {
          const middle = Math.floor(indexes.length / 2);
          pending.unshift(indexes.slice(0, middle), indexes.slice(middle));
          continue;
        }
        let answer: Record<string, unknown> = {};
        try {
          const parsed: unknown = JSON.parse(text);
          if (parsed !== null && typeof parsed === 'object') answer = parsed as Record<string, unknown>;
        } catch {
          // Not JSON: the status alone decides.
        }
        if (response.status === 200) {
          const results = answer['results'];
          if (Array.isArray(results) && results.length === indexes.length) {
            indexes.forEach((index, n) => {
              const result = (results[n] ?? {}) as Record<string, unknown>;
              const field = (key: string) => { const value = result[key]; return typeof value === 'string' ? value : ''; };
              const status = typeof result['status'] === 'number' ? result['status'] : 0;
              const error = this.failure(drafts[index] as Draft, status, null, field);
              answers[index] =
                error !== undefined ? { error } : isValidEventId(result['id']) ? { id: result['id'] } : { error: new AmbiguousError(`the gateway answered ${status} without an id`) };
            });
            continue;
          }
          failure = new AmbiguousError('the gateway answered 200 without a result per event');
        } else {
          const field = (key: string) => { const value = answer[key]; return typeof value === 'string' ? value : ''; };
          failure =
            this.failure(chosen[0] as Draft, response.status, response.headers.get('retry-after'), field) ??
            new AmbiguousError(`the gateway answered ${response.status} to a batch`);
        }
      }
      const fate = failure ?? new AmbiguousError('no answer');
      for (const index of indexes) answers[index] = { error: fate };
      const unsent =
        fate instanceof AmbiguousError || fate instanceof Refused
          ? new Refused(`not sent: an earlier request of the batch failed (${fate.message})`)
          : fate;
      for (const rest of pending.splice(0)) for (const index of rest) answers[index] = { error: unsent };
    }
    return answers.map((answer) => answer ?? { error: new InternalError('event not published') });
  }

  async close(): Promise<void> {
    // fetch keeps no state of this transport's own.
  }
}
