// Redis key and channel names (docs/protocol.md, "Redis data model"), as the `sse-wire`
// crate's `keys.rs` makes them. Every key of one user carries the hash tag `{u:<user>}`,
// every key of one topic `{t:<topic>}`, so one Redis Cluster slot holds all of it and one
// script can touch it atomically. A free-form id (job, idempotency key) is always the
// last part of a name: ids may contain `:`, and a suffix after one would let one id's key
// equal another's.

/** Default prefix of every key and channel (the gateways' `--redis-prefix`). */
export const DEFAULT_PREFIX = 'sse:';

export class Keys {
  readonly prefix: string;

  constructor(prefix: string = DEFAULT_PREFIX) {
    this.prefix = prefix;
  }

  /** `sse:{u:<user>}`: the user's channel, and the stem of the user's keys. */
  userChannel(user: string): string {
    return `${this.prefix}{u:${user}}`;
  }

  /** `sse:{u:<user>}:log`: the user's stream. */
  userLog(user: string): string {
    return `${this.userChannel(user)}:log`;
  }

  /** `sse:{u:<user>}:jobs`: the user's job ids by last update. */
  userJobs(user: string): string {
    return `${this.userChannel(user)}:jobs`;
  }

  /** `sse:{u:<user>}:job:<job>`: the job's state hash, and the job's channel. */
  job(user: string, job: string): string {
    return `${this.userChannel(user)}:job:${job}`;
  }

  /** `sse:{u:<user>}:joblog:<job>`: the job's stream. */
  jobLog(user: string, job: string): string {
    return `${this.userChannel(user)}:joblog:${job}`;
  }

  /** `sse:{u:<user>}:idem:<key>`: what an idempotency key published for this user. */
  userIdempotency(user: string, key: string): string {
    return `${this.userChannel(user)}:idem:${key}`;
  }

  /** `sse:{t:<topic>}`: the topic's channel, and the stem of its keys. */
  topicChannel(topic: string): string {
    return `${this.prefix}{t:${topic}}`;
  }

  /** `sse:{t:<topic>}:log`: the topic's stream. */
  topicLog(topic: string): string {
    return `${this.topicChannel(topic)}:log`;
  }

  /** `sse:{t:<topic>}:idem:<key>`: what an idempotency key published to this topic. */
  topicIdempotency(topic: string, key: string): string {
    return `${this.topicChannel(topic)}:idem:${key}`;
  }

  /** `sse:owner:<job>`: the job's owner (outside any user's hash slot). */
  owner(job: string): string {
    return `${this.prefix}owner:${job}`;
  }
}
