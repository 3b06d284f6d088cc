// Job state and the reducer that keeps it from a stream's events. The rules are the
// gateway's own (docs/protocol.md, "Job state"), so the state a client folds from a job
// stream equals what `GET /v1/jobs/{id}` answers at the same event.

/** A job's status. `completed`, `failed` and `cancelled` are final. */
export type JobStatus = 'queued' | 'active' | 'completed' | 'failed' | 'cancelled';

/**
 * A job's state: the data of a `status` event, an entry of a `jobs` event, and the body of
 * `GET /v1/jobs/{id}`. The gateway always sends every key; `owner`, `createdAt` and
 * `updatedAt` are `null` here only for a job first seen through a live event with no
 * snapshot before it (a stream resumed from a stored id).
 */
export interface JobState {
  jobId: string;
  owner: string | null;
  status: JobStatus;
  /** 0–100. */
  progress: number;
  stage: string | null;
  message: string | null;
  /** The `result` of the `complete` event (any JSON value). */
  result: unknown;
  /** The `error` (else `message`) of the `failed` event (any JSON value). */
  error: unknown;
  /** `ts` of the job's first event, ms since the epoch. */
  createdAt: number | null;
  /** `ts` of the job's latest event. */
  updatedAt: number | null;
  /**
   * Id of the job's latest event in the stream it came from. On a job stream and on the
   * embedded broker this is the job stream's id; with Redis, a user stream numbers its
   * events on its own, so a job folded from a user stream carries user-stream ids.
   */
  lastEventId: string | null;
}

/** Fields every published event carries (docs/protocol.md, "A published event"). */
export interface Envelope {
  type: string;
  /** Publish time, ms since the epoch. */
  ts: number;
  correlationId?: string;
  [field: string]: unknown;
}

/** A job event's data: the envelope with `jobId`, then the publisher's fields. */
export interface JobEventData extends Envelope {
  jobId: string;
  progress?: number;
  stage?: string;
  message?: string;
}

export interface ProgressData extends JobEventData { type: 'progress'; progress: number }
export interface StageData extends JobEventData { type: 'stage'; stage: string }
export interface LogData extends JobEventData { type: 'log'; level?: string; message?: string }
export interface CompleteData extends JobEventData { type: 'complete'; result?: unknown }
export interface FailedData extends JobEventData { type: 'failed'; error?: unknown }
export interface CancelledData extends JobEventData { type: 'cancelled' }

/** `status`: a job's whole state, first on a fresh job stream and after a resync. */
export interface StatusData extends JobState { resync?: boolean }

/** `jobs`: the user's most recently updated jobs (at most 100), first on a fresh user stream. */
export interface JobsData { userId: string; jobs: JobState[]; resync?: boolean }

/** A user notification (no `jobId`): `userId`, `type`, `ts`, then the publisher's fields. */
export interface NotificationData extends Envelope { userId: string }

/** The data of each event type the gateway and the SDK define. */
export interface EventDataMap {
  status: StatusData;
  jobs: JobsData;
  progress: ProgressData;
  stage: StageData;
  log: LogData;
  complete: CompleteData;
  failed: FailedData;
  cancelled: CancelledData;
}

/** A known event name, or any custom type a publisher uses. */
export type EventName = keyof EventDataMap | (string & {});

/** The data type of event `K`: known types are typed, custom ones are a JSON object. */
export type EventData<K extends string> = K extends keyof EventDataMap
  ? EventDataMap[K]
  : JobEventData | NotificationData;

/** One event as a stream delivers it: its `event:` type, its `id:`, its parsed `data:`. */
export interface StreamEvent<K extends string = string> {
  type: K;
  /** The event's id in this stream (`<ms>-<seq>`), or `null` when it had none. */
  id: string | null;
  data: EventData<K>;
}

/** Event types after which a job stream ends. */
export const TERMINAL_EVENTS: readonly string[] = ['complete', 'failed', 'cancelled'];

/** Whether a job in this status will change no more. */
export function isFinished(status: JobStatus): boolean {
  return status === 'completed' || status === 'failed' || status === 'cancelled';
}

const STATE_KEYS = [
  'jobId', 'owner', 'status', 'progress', 'stage', 'message', 'result', 'error',
  'createdAt', 'updatedAt', 'lastEventId',
] as const;

/** A job state from a gateway-made snapshot (`status`, or an entry of `jobs`): its keys only. */
export function jobStateFrom(snapshot: JobState): JobState {
  const state = {} as Record<string, unknown>;
  for (const key of STATE_KEYS) {
    const value = (snapshot as unknown as Record<string, unknown>)[key];
    state[key] = value === undefined ? null : value;
  }
  return state as unknown as JobState;
}

/** A job before its first event is applied, as the gateway creates it. */
export function newJobState(jobId: string, owner: string | null, ts: number | null): JobState {
  return {
    jobId, owner, status: 'queued', progress: 0, stage: null, message: null,
    result: null, error: null, createdAt: ts, updatedAt: ts, lastEventId: null,
  };
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * Folds one job event into a job's state, by the gateway's rules: `progress` → `active`;
 * `complete` → `completed`, progress 100, `result`; `failed` → `failed`, `error` (else
 * `message`); `cancelled` → `cancelled`; a numeric `progress` (0–100), a string `stage`,
 * and (except on `log`) a string `message` set those fields; every event sets `updatedAt`
 * and `lastEventId`. Returns a new object; `state` is not changed.
 */
export function applyJobEvent(state: JobState | null, event: StreamEvent): JobState {
  const data = event.data as JobEventData;
  const ts = typeof data.ts === 'number' ? data.ts : null;
  const next: JobState = state ? { ...state } : newJobState(data.jobId, null, ts);
  const progress = data.progress;
  if (typeof progress === 'number' && progress >= 0 && progress <= 100) { next.progress = progress; }
  if (typeof data.stage === 'string') { next.stage = data.stage; }
  if (event.type !== 'log' && typeof data.message === 'string') { next.message = data.message; }
  switch (event.type) {
    case 'progress':
      next.status = 'active';
      break;
    case 'complete':
      next.status = 'completed';
      next.progress = 100;
      next.result = data.result === undefined ? null : data.result;
      break;
    case 'failed': {
      next.status = 'failed';
      const error = data.error !== undefined ? data.error : data.message;
      next.error = error === undefined ? null : error;
      break;
    }
    case 'cancelled':
      next.status = 'cancelled';
      break;
    default:
      // `stage`, `log` and custom types change only the common fields.
  }
  if (ts !== null) { next.updatedAt = ts; }
  if (event.id !== null) { next.lastEventId = event.id; }
  return next;
}

/**
 * The reducer of one job's stream (`/v1/jobs/{id}/events`): `status` (fresh, or a resync)
 * replaces the state; every event of this job folds into it; anything else leaves it as
 * it is. Returns the same object when nothing changed.
 */
export function reduceJob(state: JobState | null, event: StreamEvent): JobState | null {
  if (event.type === 'status') {
    return isObject(event.data) && typeof event.data.jobId === 'string'
      ? jobStateFrom(event.data as unknown as JobState)
      : state;
  }
  if (event.type === 'jobs' || !isJobEvent(event)) { return state; }
  if (state && (event.data as JobEventData).jobId !== state.jobId) { return state; }
  return applyJobEvent(state, event);
}

/** Whether an event is about a job (it has a `jobId`), rather than a notification. */
export function isJobEvent(event: StreamEvent): boolean {
  return isObject(event.data) && typeof event.data.jobId === 'string' && event.data.jobId !== '';
}

/** The state a user stream (`/v1/users/me/events`) folds into. */
export interface JobsState {
  /** Job states by job id. */
  readonly jobs: Readonly<Record<string, JobState>>;
  /** The user the stream belongs to (from the `jobs` snapshot). */
  readonly userId: string | null;
  /** Id of the latest event folded in (where to resume this stream). */
  readonly lastEventId: string | null;
  /** How many snapshots arrived with `"resync": true` (events were missed and trimmed). */
  readonly resyncs: number;
}

export const EMPTY_JOBS: JobsState = Object.freeze({ jobs: Object.freeze({}), userId: null, lastEventId: null, resyncs: 0 });

/**
 * The reducer of a user stream (it also takes a job stream's events): `jobs` (fresh, or a
 * resync) replaces every job; `status` replaces one; job events fold into their job (a
 * job first seen this way gets the stream's user as owner); notifications change only
 * `lastEventId`. Returns a new object when anything changed, else `state` itself.
 */
export function reduceJobs(state: JobsState, event: StreamEvent): JobsState {
  const lastEventId = event.id !== null ? event.id : state.lastEventId;
  const data = event.data as unknown;
  if (event.type === 'jobs' && isObject(data) && Array.isArray(data.jobs)) {
    const jobs: Record<string, JobState> = {};
    for (const entry of data.jobs as unknown[]) {
      if (isObject(entry) && typeof entry.jobId === 'string') {
        jobs[entry.jobId] = jobStateFrom(entry as unknown as JobState);
      }
    }
    return {
      jobs,
      userId: typeof data.userId === 'string' ? data.userId : state.userId,
      lastEventId,
      resyncs: state.resyncs + (data.resync === true ? 1 : 0),
    };
  }
  if (event.type === 'status' && isObject(data) && typeof data.jobId === 'string') {
    return {
      ...state,
      jobs: { ...state.jobs, [data.jobId]: jobStateFrom(data as unknown as JobState) },
      lastEventId,
      resyncs: state.resyncs + (data.resync === true ? 1 : 0),
    };
  }
  if (isJobEvent(event)) {
    const jobId = (data as JobEventData).jobId;
    const before = state.jobs[jobId];
    let job = applyJobEvent(before || null, event);
    if (!before && state.userId !== null) { job = { ...job, owner: state.userId }; }
    return { ...state, jobs: { ...state.jobs, [jobId]: job }, lastEventId };
  }
  return lastEventId === state.lastEventId ? state : { ...state, lastEventId };
}

/** The jobs of a state, most recently updated first (the order of the `jobs` snapshot). */
export function jobsByRecent(state: JobsState): JobState[] {
  return Object.values(state.jobs).sort((a, b) => (b.updatedAt ?? 0) - (a.updatedAt ?? 0)
    || (b.createdAt ?? 0) - (a.createdAt ?? 0)
    || (a.jobId < b.jobId ? -1 : a.jobId > b.jobId ? 1 : 0));
}

/** Compares two event ids (`<ms>-<seq>`); `null` when either is malformed. */
export function compareIds(a: string, b: string): number | null {
  const x = /^(\d+)-(\d+)$/.exec(a);
  const y = /^(\d+)-(\d+)$/.exec(b);
  if (!x || !y) { return null; }
  // Numbers up to 2^53 are exact; ms timestamps and sequence numbers stay far below.
  return Number(x[1]) - Number(y[1]) || Number(x[2]) - Number(y[2]);
}
