// @sse-gateway/publisher: publish job progress, user notifications and topic events to the
// SSE gateway from Node.
//
//   const publisher = await Publisher.connect('redis://127.0.0.1:6379');   // or Publisher.http(url, token)
//   const job = publisher.job('render-7', 'alice');                         // job id, owner
//   await job.progress(45, 'Encoding');                                     // -> event id
//   await job.complete({ url: 'https://cdn.example/render-7.mp4' });
//   await publisher.notify('alice', 'notice', { text: 'Your render is ready' });
//   await publisher.topic('news').publish('announcement', { title: 'Maintenance at 18:00' });
//
// Transports: Redis (one atomic script per event, the scripts of docs/protocol.md, over
// ioredis; `Publisher.cluster` for Redis Cluster) or HTTP to a gateway's publish endpoints
// (over fetch). Both sit behind the same API, check every argument before sending, and
// retry with jittered backoff only what cannot publish twice.

export { Publisher, Job, Topic, Batch, DEFAULT_TIMEOUT_MS } from './publisher.js';
export type { RedisPublisherOptions, HttpPublisherOptions, Level } from './publisher.js';
export type { EventOptions } from './draft.js';
export {
  PublishError,
  InvalidArgumentError,
  OwnerConflictError,
  JobFinishedError,
  UnauthorizedError,
  RejectedError,
  UnavailableError,
  AmbiguousError,
  InternalError,
} from './errors.js';
export type { PublishErrorKind, InvalidArgumentCode } from './errors.js';
export { DEFAULT_RETRY, backoffMs } from './retry.js';
export type { RetryPolicy } from './retry.js';
export * as wire from './wire/index.js';
