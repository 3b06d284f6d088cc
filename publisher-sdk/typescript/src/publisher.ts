// The publisher API: `Publisher` (a transport and a retry policy), `Job` and `Topic`
// handles. The same shape as the Rust SDK's `sse_publisher::Publisher`.

import type { ClusterOptions, RedisOptions as IORedisOptions } from 'ioredis';

import { draft, type Draft, type EventOptions, type Target } from './draft.js';
import { AmbiguousError, InvalidArgumentError, PublishError, Refused, UnavailableError } from './errors.js';
import { HttpTransport } from './http.js';
import { luaScripts } from './lua.js';
import { RedisTransport, type BatchAnswer } from './redis.js';
import { backoffMs, retryPolicy, type RetryPolicy } from './retry.js';
import { DEFAULT_RETENTION, Keys, DEFAULT_PREFIX, type Retention } from './wire/index.js';

/** Default time one command (Redis) or request (HTTP) may take before its outcome is unknown. */
export const DEFAULT_TIMEOUT_MS = 5000;

/** Options of the Redis transport (`Publisher.connect`, `Publisher.cluster`). */
export interface RedisPublisherOptions {
  /** Key and channel prefix; must match the gateways' `--redis-prefix`. Default `sse:`. */
  readonly prefix?: string;
  /** Stream lengths and TTLs written with each event; must match the gateways'. */
  readonly retention?: Partial<Retention>;
  readonly retry?: Partial<RetryPolicy>;
  /** How long one Redis command may take; then its outcome is unknown. Default 5 s. */
  readonly commandTimeoutMs?: number;
  /** How long connecting may take. Default 5 s. */
  readonly connectTimeoutMs?: number;
  /** Further ioredis options (TLS, password, …), for `connect`. */
  readonly redis?: IORedisOptions;
  /** Further ioredis cluster options, for `cluster`. */
  readonly cluster?: ClusterOptions;
  /** The clock stamped on events as `ts` (ms since the epoch); for tests. Default `Date.now`. */
  readonly now?: () => number;
}

/** Options of the HTTP transport (`Publisher.http`). */
export interface HttpPublisherOptions {
  readonly retry?: Partial<RetryPolicy>;
  /** How long one request may take, answer included; then its outcome is unknown. Default 5 s. */
  readonly timeoutMs?: number;
}

/** Severity of a `log` event. */
export type Level = 'debug' | 'info' | 'warn' | 'error';

interface Transport {
  publish(draft: Draft): Promise<string>;
  publishBatch(drafts: readonly Draft[]): Promise<BatchAnswer[]>;
  close(): Promise<void>;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * Publishes job progress, user notifications and topic events to the SSE gateway, over
 * Redis (`connect`, `cluster`) or a gateway's HTTP API (`http`). Every method checks its
 * arguments before sending anything and resolves to the event's id (`<ms>-<seq>`).
 */
export class Publisher {
  private closed = false;

  private constructor(
    private readonly transport: Transport,
    private readonly retry: RetryPolicy,
  ) {}

  /**
   * Connects to the gateways' Redis (`redis://[user:password@]host:port[/db]`,
   * `rediss://…` for TLS) and checks the connection with `PING`. Each event is one atomic
   * script; live events go out with `PUBLISH`.
   */
  static async connect(url: string, options: RedisPublisherOptions = {}): Promise<Publisher> {
    if (!/^rediss?:\/\/[^/?#]/.test(url) || !URL.canParse(url)) {
      throw new InvalidArgumentError('invalid_url', `${JSON.stringify(url)} is not a Redis URL like redis://127.0.0.1:6379`);
    }
    const transport = await Publisher.redisTransport(options, (redisOptions, config) =>
      RedisTransport.connect(url, { ...options.redis, ...redisOptions }, config),
    );
    return new Publisher(transport, retryPolicy(options.retry));
  }

  /**
   * Connects to a Redis Cluster through any of its nodes (`host:port` or
   * `redis://host:port` each). Each user's events go to its shard; live events go out with
   * `SPUBLISH` (sharded pub/sub), as gateways started with `--redis-cluster` expect.
   */
  static async cluster(seeds: readonly string[], options: RedisPublisherOptions = {}): Promise<Publisher> {
    const transport = await Publisher.redisTransport(options, (redisOptions, config) =>
      RedisTransport.cluster(
        seeds,
        { ...options.cluster, redisOptions: { ...options.cluster?.redisOptions, ...options.redis, ...redisOptions } },
        config,
      ),
    );
    return new Publisher(transport, retryPolicy(options.retry));
  }

  private static async redisTransport(
    options: RedisPublisherOptions,
    open: (
      redisOptions: IORedisOptions,
      config: ConstructorParameters<typeof RedisTransport>[1],
    ) => Promise<RedisTransport>,
  ): Promise<RedisTransport> {
    const config = {
      keys: new Keys(options.prefix ?? DEFAULT_PREFIX),
      retention: { ...DEFAULT_RETENTION, ...options.retention },
      now: options.now ?? Date.now,
    };
    // Read before connecting: a package without its scripts is broken, not unavailable.
    luaScripts();
    const redisOptions: IORedisOptions = {
      commandTimeout: options.commandTimeoutMs ?? DEFAULT_TIMEOUT_MS,
      connectTimeout: options.connectTimeoutMs ?? DEFAULT_TIMEOUT_MS,
    };
    try {
      return await open(redisOptions, config);
    } catch (error) {
      throw new UnavailableError(1, `redis: ${(error as Error).message}`, { cause: error });
    }
  }

  /**
   * Publishes through a gateway's HTTP API (`http://host:port`, or `https://` through a
   * TLS-terminating proxy), with a token whose role is `publisher`.
   */
  static http(gatewayUrl: string, token: string, options: HttpPublisherOptions = {}): Publisher {
    const transport = new HttpTransport(gatewayUrl, token, { timeoutMs: options.timeoutMs ?? DEFAULT_TIMEOUT_MS });
    return new Publisher(transport, retryPolicy(options.retry));
  }

  /** A handle on one job, owned by `owner` (registered by the job's first event). */
  job(jobId: string, owner: string): Job {
    return new Job(this, jobId, owner);
  }

  /** A handle on one topic (a broadcast feed: every watcher of the topic gets its events). */
  topic(topic: string): Topic {
    return new Topic(this, topic);
  }

  /** An empty batch: add events, then `send()` publishes them in one go. */
  batch(): Batch {
    return new Batch(this);
  }

  /** Sends a notification to a user's stream; resolves to its id there. */
  notify(user: string, eventType: string, data?: object | null, options?: EventOptions): Promise<string> {
    return this.send({ kind: 'user', user }, eventType, data, options);
  }

  /** Closes the transport's connections; publishing afterwards fails. */
  async close(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      await this.transport.close();
    }
  }

  /**
   * @internal Publishes a batch's checked events, sending again (with backoff) those that
   * certainly were not published — and, with an idempotency key, those whose outcome is
   * unknown — while attempts remain.
   */
  async sendBatch(entries: ReadonlyArray<Draft | InvalidArgumentError>): Promise<Array<PromiseSettledResult<string>>> {
    const results: Array<PromiseSettledResult<string> | undefined> = entries.map((entry) =>
      entry instanceof InvalidArgumentError ? { status: 'rejected', reason: entry } : undefined,
    );
    let pending = entries.flatMap((entry, index) => (entry instanceof InvalidArgumentError ? [] : [[index, entry] as const]));
    if (this.closed && pending.length > 0) {
      throw new InvalidArgumentError('invalid_body', 'the publisher is closed');
    }
    for (let attempt = 1; pending.length > 0; attempt += 1) {
      const answers = await this.transport.publishBatch(pending.map(([, draft]) => draft));
      const again: typeof pending = [];
      let hint: number | undefined;
      pending.forEach(([index, draft], n) => {
        const answer = answers[n] ?? { error: new AmbiguousError('no answer') };
        if ('id' in answer) {
          results[index] = { status: 'fulfilled', value: answer.id };
          return;
        }
        const error = answer.error;
        const retryable = error instanceof Refused || (error instanceof AmbiguousError && draft.options.idempotencyKey !== undefined);
        if (retryable && attempt < this.retry.attempts) {
          again.push([index, draft]);
          if (error instanceof Refused && error.retryAfterMs !== undefined) hint = Math.max(hint ?? 0, error.retryAfterMs);
          return;
        }
        const reason = error instanceof Refused ? new UnavailableError(attempt, error.message, { cause: error }) : error;
        results[index] = { status: 'rejected', reason };
      });
      pending = again;
      if (pending.length > 0) await sleep(backoffMs(this.retry, attempt - 1, hint));
    }
    return results.map((result) => result ?? { status: 'rejected', reason: new AmbiguousError('event not published') });
  }

  /** @internal Checks an event and publishes it, retrying what may be retried. */
  async send(target: Target, eventType: string, data: unknown, options: EventOptions = {}): Promise<string> {
    const checked = draft(target, eventType, data, options);
    if (this.closed) {
      throw new InvalidArgumentError('invalid_body', 'the publisher is closed');
    }
    for (let attempt = 1; ; attempt += 1) {
      try {
        return await this.transport.publish(checked);
      } catch (error) {
        // With an idempotency key a repeat cannot publish twice, so an attempt whose
        // outcome is unknown is retried too.
        const retryable =
          error instanceof Refused || (error instanceof AmbiguousError && checked.options.idempotencyKey !== undefined);
        if (retryable && attempt < this.retry.attempts) {
          const hint = error instanceof Refused ? error.retryAfterMs : undefined;
          await sleep(backoffMs(this.retry, attempt - 1, hint));
          continue;
        }
        if (error instanceof Refused) {
          throw new UnavailableError(attempt, error.message, { cause: error });
        }
        if (error instanceof PublishError) {
          throw error;
        }
        throw new AmbiguousError(String(error), { cause: error });
      }
    }
  }
}

/**
 * Events of any jobs, users and topics, published in one go by `send()`: over HTTP one
 * `POST /v1/events:batch` (split at 100 events or 64 KiB, by traceparent, and in halves
 * when the gateway answers `413`), over Redis one script call per hash tag (one on one
 * Redis). The adding methods return the batch, so calls chain.
 */
export class Batch {
  private readonly entries: Array<Draft | InvalidArgumentError> = [];

  /** @internal */
  constructor(private readonly publisher: Publisher) {}

  private add(target: Target, eventType: string, data: unknown, options?: EventOptions): this {
    try {
      this.entries.push(draft(target, eventType, data, options));
    } catch (error) {
      if (!(error instanceof InvalidArgumentError)) throw error;
      this.entries.push(error);
    }
    return this;
  }

  /** Adds one of a job's events (any type, as `Job.event`). */
  event(job: Job, eventType: string, data?: object | null, options?: EventOptions): this {
    return this.add({ kind: 'job', job: job.id, owner: job.owner }, eventType, data, options);
  }

  /** Adds a job's `progress` (as `Job.progress`). */
  progress(job: Job, progress: number, stage?: string, options?: EventOptions): this {
    return this.event(job, 'progress', stage === undefined ? { progress } : { progress, stage }, options);
  }

  /** Adds a notification to a user's stream (as `Publisher.notify`). */
  notify(user: string, eventType: string, data?: object | null, options?: EventOptions): this {
    return this.add({ kind: 'user', user }, eventType, data, options);
  }

  /** Adds an event to a topic (as `Topic.publish`). */
  topicEvent(topic: Topic, eventType: string, data?: object | null, options?: EventOptions): this {
    return this.add({ kind: 'topic', topic: topic.name }, eventType, data, options);
  }

  /** Events added so far. */
  get size(): number {
    return this.entries.length;
  }

  /**
   * Publishes the events: one result per event, in the order they were added, as
   * `Promise.allSettled` gives them — `fulfilled` with the event's id (for a repeated
   * idempotency key, the first event's), or `rejected` with the `PublishError` it met
   * (invalid arguments, checked before anything is sent; another owner; a finished job;
   * unavailable after the retries). A refused event does not stop the others; the events
   * of one job, user or topic keep their order.
   */
  send(): Promise<Array<PromiseSettledResult<string>>> {
    return this.publisher.sendBatch(this.entries);
  }
}

/** A job's events, all sent with its owner. */
export class Job {
  /** @internal */
  constructor(
    private readonly publisher: Publisher,
    readonly id: string,
    readonly owner: string,
  ) {}

  /** `progress` (a number from 0 to 100), at a stage; sets the job `active`. */
  progress(progress: number, stage?: string, options?: EventOptions): Promise<string> {
    return this.event('progress', stage === undefined ? { progress } : { progress, stage }, options);
  }

  /** `stage`: the job entered a stage. */
  stage(stage: string, options?: EventOptions): Promise<string> {
    return this.event('stage', { stage }, options);
  }

  /** `log`: one log line (not the job's status message). */
  log(level: Level, message: string, options?: EventOptions): Promise<string> {
    return this.event('log', { level, message }, options);
  }

  /** `complete`, with a result (any JSON); the job's streams end after it. */
  complete(result: unknown = null, options?: EventOptions): Promise<string> {
    return this.event('complete', { result: result === undefined ? null : result }, options);
  }

  /**
   * `failed`, with an error: a message, any JSON, or an `Error` (its message is sent); the
   * job's streams end after it.
   */
  fail(error: unknown, options?: EventOptions): Promise<string> {
    const value = error instanceof Error ? error.message : error === undefined ? null : error;
    return this.event('failed', { error: value }, options);
  }

  /** `cancelled`, with an optional reason; the job's streams end after it. */
  cancel(reason?: string, options?: EventOptions): Promise<string> {
    return this.event('cancelled', reason === undefined ? {} : { message: reason }, options);
  }

  /** Any event type, with a JSON object of fields. */
  event(eventType: string, data?: object | null, options?: EventOptions): Promise<string> {
    return this.publisher.send({ kind: 'job', job: this.id, owner: this.owner }, eventType, data, options);
  }
}

/** A topic's events (a broadcast feed). */
export class Topic {
  /** @internal */
  constructor(
    private readonly publisher: Publisher,
    readonly name: string,
  ) {}

  /** Publishes an event with a JSON object of fields; resolves to its id in the topic's stream. */
  publish(eventType: string, data?: object | null, options?: EventOptions): Promise<string> {
    return this.publisher.send({ kind: 'topic', topic: this.name }, eventType, data, options);
  }
}
