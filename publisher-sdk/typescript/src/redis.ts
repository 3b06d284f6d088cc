// The Redis transport: one owner registration per job (cached), then one atomic script
// per event, straight into the gateways' Redis (docs/protocol.md, "The scripts"). The
// scripts are ioredis custom commands (`defineCommand`): `EVALSHA`, and on `NOSCRIPT` the
// script itself, which is safe to repeat because a `NOSCRIPT` call did nothing.
//
// Retries belong to the publisher, not to ioredis, because only the publisher knows
// whether a repeat is safe. So ioredis is told never to queue a command while it is
// disconnected (`enableOfflineQueue: false`: the command fails at once, certainly unsent,
// and the publisher backs off while ioredis reconnects) and never to resend a command that
// was in flight when the connection broke (`autoResendUnfulfilledCommands: false`: that
// outcome is unknown, and a blind resend could publish the event twice).

import { Cluster, Redis, type ClusterOptions, type RedisOptions as IORedisOptions } from 'ioredis';

import type { Draft } from './draft.js';
import { AmbiguousError, InternalError, JobFinishedError, OwnerConflictError, PublishError, Refused } from './errors.js';
import { luaScripts } from './lua.js';
import { OwnerCache } from './owner-cache.js';
import {
  BATCH_SCRIPT_EVENTS,
  hashTag,
  outcomeOf,
  publishBatchCall,
  publishJobCall,
  publishTopicCall,
  publishUserCall,
  registerOwnerCall,
  renderEventData,
  type Keys,
  type PublishCommand,
  type Retention,
  type ScriptCall,
  type ScriptName,
} from './wire/index.js';

/** The ioredis command each script is defined as. */
const COMMANDS: Readonly<Record<ScriptName, string>> = {
  register_owner: 'sseRegisterOwner',
  publish_job: 'ssePublishJob',
  publish_user: 'ssePublishUser',
  publish_topic: 'ssePublishTopic',
  publish_batch: 'ssePublishBatch',
};

/**
 * Error replies that mean Redis did not run the command and may later: loading a data
 * set, a cluster slot moving or failing over, a replica not (yet) a master.
 */
const NOT_RUN_REPLIES = ['LOADING', 'TRYAGAIN', 'CLUSTERDOWN', 'MASTERDOWN', 'READONLY', 'MOVED', 'ASK'];

/** Failures ioredis reports for a command it never wrote to a socket. */
const NEVER_SENT = [
  "Stream isn't writeable and enableOfflineQueue options is false",
  "Cluster isn't ready and enableOfflineQueue options is false",
  'Command cannot be queued during a connection handoff',
];

/**
 * ioredis options every publisher connection needs (see the top of this file).
 * `enableAutoPipelining`: the commands of concurrent publishes made in one tick of the
 * event loop go out in one write, and Redis reads them in one read and answers them in
 * one write, instead of a round of system calls each.
 */
export const CONNECTION_OPTIONS = {
  lazyConnect: true,
  enableOfflineQueue: false,
  autoResendUnfulfilledCommands: false,
  enableAutoPipelining: true,
} as const satisfies IORedisOptions;

/** What a batch answers for each event: its id, or why it was not published. */
export type BatchAnswer = { readonly id: string } | { readonly error: PublishError | Refused };

/**
 * What a failed Redis command means for the event: certainly not run and worth retrying
 * (`Refused`), run and failed (`InternalError`), or unknown (`AmbiguousError`).
 */
export function classifyRedisError(error: unknown): Refused | PublishError {
  const err = error instanceof Error ? error : new Error(String(error));
  const message = err.message;
  if (err.name === 'ReplyError') {
    const code = message.split(' ', 1)[0] ?? '';
    if (NOT_RUN_REPLIES.includes(code)) {
      return new Refused(`redis: ${message}`, undefined, { cause: err });
    }
    return new InternalError(`redis: ${message}`, { cause: err });
  }
  if (err.name === 'MaxRetriesPerRequestError' || NEVER_SENT.some((text) => message.startsWith(text))) {
    return new Refused(`redis: not connected (${message})`, undefined, { cause: err });
  }
  // "Command aborted due to connection close", "Connection is closed.", "Command timed
  // out", a socket error: the command may have run.
  return new AmbiguousError(`redis: ${message}`, { cause: err });
}

type ScriptFunction = (numberOfKeys: number, ...keysAndArgs: string[]) => Promise<unknown>;

/** Options of a Redis transport. */
export interface RedisTransportConfig {
  readonly keys: Keys;
  readonly retention: Retention;
  /** The time stamped on each event (ms since the epoch). */
  readonly now: () => number;
}

export class RedisTransport {
  private readonly command: PublishCommand;
  private readonly owners = new OwnerCache();
  /** How to fail each command awaiting its reply, should its connection close. */
  private readonly inFlight = new Set<(error: Error) => void>();

  constructor(
    private readonly client: Redis | Cluster,
    private readonly config: RedisTransportConfig,
  ) {
    // Sharded pub/sub on a cluster: a PUBLISH there would go to every node.
    this.command = client instanceof Cluster ? 'SPUBLISH' : 'PUBLISH';
    // A reply comes on the connection its command went out on: when that connection
    // closes, every command still awaiting one has an unknown outcome. ioredis (with
    // `autoResendUnfulfilledCommands: false`) neither resends nor settles them, until their
    // command timeout; they are failed here at once instead. On a cluster any node's
    // connection counts (a command on another node is then called unknown too: the safe
    // side). Listening starts before connecting, so no node's connection is missed.
    const failInFlight = () => {
      const error = new Error('Connection is closed with the command in flight.');
      for (const fail of this.inFlight) fail(error);
      this.inFlight.clear();
    };
    client.on('close', failInFlight);
    if (client instanceof Cluster) {
      client.on('+node', (node: Redis) => node.on('close', failInFlight));
    }
    const sources = luaScripts();
    for (const [script, name] of Object.entries(COMMANDS) as Array<[ScriptName, string]>) {
      client.defineCommand(name, { lua: sources[script] });
    }
  }

  /** Connects to one Redis (`redis://…`, `rediss://…`), and checks it with `PING`. */
  static async connect(url: string, options: IORedisOptions, config: RedisTransportConfig): Promise<RedisTransport> {
    const client = new Redis(url, { ...options, ...CONNECTION_OPTIONS });
    return RedisTransport.ready(client, config);
  }

  /** Connects to a Redis Cluster through any of its nodes. */
  static async cluster(
    seeds: ReadonlyArray<string | { host: string; port: number }>,
    options: ClusterOptions,
    config: RedisTransportConfig,
  ): Promise<RedisTransport> {
    const nodes = seeds.map((seed) => (typeof seed === 'string' ? seedOf(seed) : seed));
    const client = new Cluster(nodes, {
      ...options,
      lazyConnect: true,
      enableOfflineQueue: false,
      enableAutoPipelining: true,
      redisOptions: { ...options.redisOptions, autoResendUnfulfilledCommands: false },
    });
    return RedisTransport.ready(client, config);
  }

  private static async ready(client: Redis | Cluster, config: RedisTransportConfig): Promise<RedisTransport> {
    // Without a listener ioredis prints every connection error; a failed command carries its own.
    client.on('error', () => {});
    const transport = new RedisTransport(client, config);
    try {
      await client.connect();
      await client.ping();
    } catch (error) {
      client.disconnect();
      throw error;
    }
    return transport;
  }

  async publish(draft: Draft): Promise<string> {
    const { keys, retention } = this.config;
    const ts = this.config.now();
    const { target, eventType, fields, options } = draft;
    const subject =
      target.kind === 'job'
        ? ({ kind: 'job', job: target.job } as const)
        : target.kind === 'user'
          ? ({ kind: 'user', user: target.user } as const)
          : ({ kind: 'topic', topic: target.topic } as const);
    const dataJson = renderEventData(subject, eventType, ts, options, fields);
    let call: ScriptCall;
    if (target.kind === 'job') {
      await this.registerOwner(target.job, target.owner);
      const event = { job: target.job, owner: target.owner, eventType, dataJson, ts, patch: draft.patch };
      call = publishJobCall(keys, event, options, retention, this.command);
    } else if (target.kind === 'user') {
      call = publishUserCall(keys, target.user, eventType, dataJson, options, retention, this.command);
    } else {
      call = publishTopicCall(keys, target.topic, eventType, dataJson, options, retention, this.command);
    }
    let reply: unknown;
    try {
      reply = await this.run(call);
    } catch (error) {
      throw classifyRedisError(error);
    }
    const outcome = outcomeOf(reply);
    if (outcome === null) {
      throw new InternalError(`unexpected reply of ${call.script}: ${JSON.stringify(reply)}`);
    }
    if (outcome.kind === 'finished') {
      throw new JobFinishedError(target.kind === 'job' ? target.job : '');
    }
    return outcome.id;
  }

  /**
   * Publishes events in one script call per hash tag on a cluster (one for all on one
   * Redis), after registering the owners not yet confirmed; the calls of different hash
   * tags run at once. One answer per event, in order.
   */
  async publishBatch(drafts: readonly Draft[]): Promise<BatchAnswer[]> {
    const answers: Array<BatchAnswer | undefined> = drafts.map(() => undefined);
    // Owners: one job's one after the other (the first named wins), jobs at once.
    const owners = new Map<string, string[]>();
    for (const { target } of drafts) {
      if (target.kind !== 'job') continue;
      const named = owners.get(target.job) ?? [];
      if (!named.includes(target.owner)) named.push(target.owner);
      owners.set(target.job, named);
    }
    await Promise.all(
      [...owners].map(async ([job, named]) => {
        for (const owner of named) {
          try {
            await this.registerOwner(job, owner);
          } catch (error) {
            const failure = error instanceof PublishError || error instanceof Refused ? error : classifyRedisError(error);
            drafts.forEach((d, i) => {
              if (d.target.kind === 'job' && d.target.job === job && d.target.owner === owner) answers[i] = { error: failure };
            });
          }
        }
      }),
    );
    const ts = this.config.now();
    const groups = new Map<string, Array<[number, ScriptCall]>>();
    drafts.forEach((draft, index) => {
      if (answers[index] !== undefined) return;
      const call = this.callOf(draft, ts);
      const tag = this.client instanceof Cluster ? hashTag(call.keys[0] ?? '') : '';
      const group = groups.get(tag) ?? [];
      group.push([index, call]);
      groups.set(tag, group);
    });
    await Promise.all(
      [...groups.values()].map(async (group) => {
        for (let start = 0; start < group.length; start += BATCH_SCRIPT_EVENTS) {
          const chunk = group.slice(start, start + BATCH_SCRIPT_EVENTS);
          const call = publishBatchCall(chunk.map(([, c]) => c));
          let reply: unknown;
          try {
            reply = await this.run(call);
          } catch (error) {
            const failure = classifyRedisError(error);
            for (const [index] of chunk) answers[index] = { error: failure };
            continue;
          }
          const replies = call.script === 'publish_batch' ? reply : [reply];
          chunk.forEach(([index], n) => {
            const one: unknown = Array.isArray(replies) && replies.length === chunk.length ? replies[n] : undefined;
            answers[index] = this.answerOf(drafts[index] as Draft, call.script, one);
          });
        }
      }),
    );
    return answers.map((answer) => answer ?? { error: new InternalError('event not published') });
  }

  private callOf(draft: Draft, ts: number): ScriptCall {
    const { keys, retention } = this.config;
    const { target, eventType, fields, options } = draft;
    const subject =
      target.kind === 'job'
        ? ({ kind: 'job', job: target.job } as const)
        : target.kind === 'user'
          ? ({ kind: 'user', user: target.user } as const)
          : ({ kind: 'topic', topic: target.topic } as const);
    const dataJson = renderEventData(subject, eventType, ts, options, fields);
    if (target.kind === 'job') {
      const event = { job: target.job, owner: target.owner, eventType, dataJson, ts, patch: draft.patch };
      return publishJobCall(keys, event, options, retention, this.command);
    }
    if (target.kind === 'user') {
      return publishUserCall(keys, target.user, eventType, dataJson, options, retention, this.command);
    }
    return publishTopicCall(keys, target.topic, eventType, dataJson, options, retention, this.command);
  }

  private answerOf(draft: Draft, script: string, reply: unknown): BatchAnswer {
    const outcome = outcomeOf(reply);
    if (outcome === null) {
      return { error: new InternalError(`unexpected reply of ${script}: ${JSON.stringify(reply)}`) };
    }
    if (outcome.kind === 'finished') {
      return { error: new JobFinishedError(draft.target.kind === 'job' ? draft.target.job : '') };
    }
    return { id: outcome.id };
  }

  /** Registers the job's owner, or confirms it; skipped while the cache knows it. */
  private async registerOwner(job: string, owner: string): Promise<void> {
    if (this.owners.get(job) === owner) {
      return;
    }
    let current: unknown;
    try {
      current = await this.run(registerOwnerCall(this.config.keys, job, owner, this.config.retention));
    } catch (error) {
      const classified = classifyRedisError(error);
      // Registering is idempotent and publishes nothing: an unknown outcome is safe to repeat.
      throw classified instanceof AmbiguousError ? new Refused(classified.message, undefined, { cause: error }) : classified;
    }
    // The script returns nil (RESP2) or false (RESP3) when `owner` is the owner now.
    if (typeof current === 'string' || Buffer.isBuffer(current)) {
      throw new OwnerConflictError(job);
    }
    this.owners.put(job, owner);
  }

  private run(call: ScriptCall): Promise<unknown> {
    const command = (this.client as unknown as Record<string, ScriptFunction>)[COMMANDS[call.script]];
    if (command === undefined) {
      return Promise.reject(new Error(`script ${call.script} is not defined`));
    }
    return new Promise((resolve, reject) => {
      this.inFlight.add(reject);
      command
        .call(this.client, call.keys.length, ...call.keys, ...call.args)
        .then(resolve, reject)
        .finally(() => this.inFlight.delete(reject));
    });
  }

  async close(): Promise<void> {
    try {
      await this.client.quit();
    } catch {
      this.client.disconnect();
    }
  }
}

/** `host:port` or `redis://host:port` → a cluster seed. */
function seedOf(seed: string): { host: string; port: number } {
  const url = new URL(seed.includes('://') ? seed : `redis://${seed}`);
  // An IPv6 host comes bracketed (`[::1]`), as a URL writes it; a socket wants it bare.
  return { host: url.hostname.replace(/^\[(.*)\]$/, '$1'), port: Number(url.port || 6379) };
}
