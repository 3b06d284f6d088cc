// @sse-gateway/client: follow a job, all of a user's jobs, or topics (broadcast feeds)
// through the SSE gateway.
//
//   import { openStream, reduceJobs, EMPTY_JOBS } from '@sse-gateway/client';
//   let board = EMPTY_JOBS;
//   const stream = openStream({ refreshToken: () => fetch('/session/refresh', { method: 'POST' }) });
//   stream.onEvent((event) => { board = reduceJobs(board, event); render(board); });
//
//   const feed = openTopicStream({ topic: 'announcements', anonymous: true });
//   feed.on('announcement', (event) => show(event.data));
//
// docs/clients.md in the gateway's repository is the guide.

export {
  openStream, streamUrl, pathSegment, StreamError,
  type SseStream, type StreamOptions, type StreamStats, type StateChange, type ConnectionState, type TokenSource,
} from './stream.js';
export {
  openTopicStream, topicsUrl,
  type TopicStream, type TopicStreamOptions, type TopicEvent, type TopicEventData, type TopicEnvelope, type ResyncData,
} from './topics.js';
export {
  decide, parseRetryAfter, retryDelay, DEFAULT_RETRY, type Decision, type RetryOptions,
} from './policy.js';
export {
  reduceJob, reduceJobs, applyJobEvent, jobStateFrom, newJobState, jobsByRecent, isFinished, isJobEvent,
  compareIds, EMPTY_JOBS, TERMINAL_EVENTS,
  type JobState, type JobStatus, type JobsState, type StreamEvent, type EventName, type EventData,
  type EventDataMap, type Envelope, type JobEventData, type ProgressData, type StageData, type LogData,
  type CompleteData, type FailedData, type CancelledData, type StatusData, type JobsData, type NotificationData,
} from './state.js';
