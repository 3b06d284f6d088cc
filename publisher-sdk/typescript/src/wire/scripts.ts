// The Redis scripts of the data model (docs/protocol.md, "The scripts") and their keys
// and arguments, built exactly as the `sse-wire` crate's `scripts.rs` builds them, so
// every publisher calls them identically (the shared fixtures hold this to the byte).
// The Lua sources themselves are not here: the package ships a copy of
// publisher-sdk/wire/lua/ (see src/lua.ts).

import { isTerminalType, isValidEventId } from './ids.js';
import type { Keys } from './keys.js';

/** Retention limits a publisher applies when it writes; must match the gateways'. */
export interface Retention {
  /** `MAXLEN ~` of a job's stream. */
  readonly jobStreamMaxlen: number;
  /** `MAXLEN ~` of a user's stream. */
  readonly userStreamMaxlen: number;
  /** `MAXLEN ~` of a topic's stream (the gateways' `--topic-stream-maxlen`). */
  readonly topicStreamMaxlen: number;
  /** How long a finished job's keys live after its terminal event (`--retention`). */
  readonly retentionMs: number;
  /** How long a user's keys, a running job's and a topic's stream live after the last event. */
  readonly userRetentionMs: number;
  /** How long a publish's idempotency key is remembered (`--idempotency-window`). */
  readonly idempotencyWindowMs: number;
}

export const DEFAULT_RETENTION: Retention = Object.freeze({
  jobStreamMaxlen: 1000,
  userStreamMaxlen: 10_000,
  topicStreamMaxlen: 1000,
  retentionMs: 24 * 3600 * 1000,
  userRetentionMs: 7 * 24 * 3600 * 1000,
  idempotencyWindowMs: 10 * 60 * 1000,
});

/** `PUBLISH`, or `SPUBLISH` (sharded pub/sub) on Redis Cluster. */
export type PublishCommand = 'PUBLISH' | 'SPUBLISH';

/** The scripts a publisher runs (file names in lua/, without `.lua`). */
export type ScriptName = 'register_owner' | 'publish_job' | 'publish_user' | 'publish_topic' | 'publish_batch';

/** Keys and arguments of one script call. */
export interface ScriptCall {
  readonly script: ScriptName;
  readonly keys: string[];
  readonly args: string[];
}

/** How a publish is made, beyond the event itself. */
export interface PublishOptions {
  /** A repeat with the same key within the window publishes nothing and returns the first id. */
  readonly idempotencyKey?: string | undefined;
  /** Publish to a finished job, reopening it (job events only). */
  readonly reopen?: boolean | undefined;
}

/** A validated job event, rendered and ready to publish. */
export interface JobPublish {
  readonly job: string;
  readonly owner: string;
  readonly eventType: string;
  /** From `renderEventData`. */
  readonly dataJson: string;
  readonly ts: number;
  /** From `statePatch`. */
  readonly patch: ReadonlyArray<readonly [string, string]>;
}

const flag = (value: boolean | undefined) => (value ? '1' : '0');

/** Arguments of `register_owner.lua`. */
export function registerOwnerCall(keys: Keys, job: string, owner: string, retention: Retention): ScriptCall {
  return {
    script: 'register_owner',
    keys: [keys.owner(job)],
    args: [owner, String(Math.max(retention.userRetentionMs, retention.retentionMs))],
  };
}

/** Arguments of `publish_job.lua`. */
export function publishJobCall(
  keys: Keys,
  event: JobPublish,
  options: PublishOptions,
  retention: Retention,
  command: PublishCommand,
): ScriptCall {
  const args = [
    event.job,
    event.owner,
    event.eventType,
    event.dataJson,
    String(event.ts),
    String(retention.jobStreamMaxlen),
    String(retention.userStreamMaxlen),
    flag(isTerminalType(event.eventType)),
    String(retention.retentionMs),
    String(retention.userRetentionMs),
    keys.job(event.owner, event.job),
    keys.userChannel(event.owner),
    command,
    flag(options.reopen),
    String(retention.idempotencyWindowMs),
  ];
  for (const [name, value] of event.patch) {
    args.push(name, value);
  }
  const scriptKeys = [
    keys.job(event.owner, event.job),
    keys.jobLog(event.owner, event.job),
    keys.userLog(event.owner),
    keys.userJobs(event.owner),
  ];
  if (options.idempotencyKey !== undefined) {
    scriptKeys.push(keys.userIdempotency(event.owner, options.idempotencyKey));
  }
  return { script: 'publish_job', keys: scriptKeys, args };
}

/** Arguments of `publish_user.lua`. */
export function publishUserCall(
  keys: Keys,
  user: string,
  eventType: string,
  dataJson: string,
  options: PublishOptions,
  retention: Retention,
  command: PublishCommand,
): ScriptCall {
  const scriptKeys = [keys.userLog(user)];
  if (options.idempotencyKey !== undefined) {
    scriptKeys.push(keys.userIdempotency(user, options.idempotencyKey));
  }
  return {
    script: 'publish_user',
    keys: scriptKeys,
    args: [
      eventType,
      dataJson,
      String(retention.userStreamMaxlen),
      String(retention.userRetentionMs),
      keys.userChannel(user),
      command,
      String(retention.idempotencyWindowMs),
    ],
  };
}

/** Arguments of `publish_topic.lua`. */
export function publishTopicCall(
  keys: Keys,
  topic: string,
  eventType: string,
  dataJson: string,
  options: PublishOptions,
  retention: Retention,
  command: PublishCommand,
): ScriptCall {
  const scriptKeys = [keys.topicLog(topic)];
  if (options.idempotencyKey !== undefined) {
    scriptKeys.push(keys.topicIdempotency(topic, options.idempotencyKey));
  }
  return {
    script: 'publish_topic',
    keys: scriptKeys,
    args: [
      eventType,
      dataJson,
      String(retention.topicStreamMaxlen),
      String(retention.userRetentionMs),
      keys.topicChannel(topic),
      command,
      String(retention.idempotencyWindowMs),
    ],
  };
}

/** What a publish script answered. */
export type Outcome =
  | { readonly kind: 'published'; readonly id: string }
  | { readonly kind: 'duplicate'; readonly id: string }
  | { readonly kind: 'finished' };

/**
 * Reads a publish script's reply (`["published", id, …]`, `["duplicate", id]`,
 * `["finished"]`); `null` for anything else.
 */
export function outcomeOf(reply: unknown): Outcome | null {
  if (!Array.isArray(reply) || reply.length === 0) {
    return null;
  }
  const [kind, id] = reply.map((part: unknown) => (Buffer.isBuffer(part) ? part.toString('utf8') : part));
  const eventId = isValidEventId(id) ? id : null;
  if (kind === 'published' && eventId !== null) return { kind, id: eventId };
  if (kind === 'duplicate' && eventId !== null) return { kind, id: eventId };
  if (kind === 'finished') return { kind };
  return null;
}

/** Most events in one call of the batch script (sse-wire's `BATCH_SCRIPT_EVENTS`). */
export const BATCH_SCRIPT_EVENTS = 100;

const BATCH_KINDS: Readonly<Record<string, string>> = { publish_job: 'job', publish_user: 'user', publish_topic: 'topic' };

/**
 * The batch script's source, assembled from the single scripts as sse-wire's
 * `scripts::PUBLISH_BATCH` is: each publish script wrapped as a local function of
 * `(KEYS, ARGV)`, then the driver (`publish_batch.lua`).
 */
export function publishBatchSource(sources: { publish_job: string; publish_user: string; publish_topic: string; driver: string }): string {
  const wrap = (kind: string, text: string) => `local function publish_${kind}(KEYS, ARGV)\n${text}\nend\n`;
  return wrap('job', sources.publish_job) + wrap('user', sources.publish_user) + wrap('topic', sources.publish_topic) + sources.driver;
}

/**
 * One call of the batch script running these single calls in order (sse-wire's
 * `publish_batch_call`); a single call stays itself.
 */
export function publishBatchCall(calls: readonly ScriptCall[]): ScriptCall {
  if (calls.length === 1 && calls[0] !== undefined) return calls[0];
  const keys: string[] = [];
  const args: string[] = [String(calls.length)];
  for (const call of calls) {
    keys.push(...call.keys);
    args.push(BATCH_KINDS[call.script] ?? call.script, String(call.keys.length), String(call.args.length), ...call.args);
  }
  return { script: 'publish_batch', keys, args };
}

/** The hash tag of a key (`{u:alice}`), or the whole key when it has none. */
export function hashTag(key: string): string {
  const open = key.indexOf('{');
  if (open >= 0) {
    const close = key.indexOf('}', open + 1);
    if (close > open + 1) return key.slice(open, close + 1);
  }
  return key;
}
