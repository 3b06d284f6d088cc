// The publisher API: `Publisher` (a transport and a retry policy), `Job` and `Topic`
// handles. The same shape as the Rust SDK's `sse_publisher::Publisher`.

import type { ClusterOptions, RedisOptions as IORedisOptions } from 'ioredis';

import { draft, type Draft, type EventOptions, type Target } from './draft.js';
import { AmbiguousError, InvalidArgumentError, PublishError, Refused, UnavailableError } from './errors.js';
import { HttpTransport } from './http.js';
import { luaScripts } from './lua.js';
import { RedisTransport } from './redis.js';
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
