// The reducers against the gateway's state rules (docs/protocol.md, "Job state"), on
// hand-written events shaped exactly like the gateway's. The browser suite checks the
// same against a real gateway's GET /v1/jobs/{id}.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { reduceJob, reduceJobs, EMPTY_JOBS, jobsByRecent, compareIds, isFinished } from '../dist/index.js';

const ev = (type, id, data) => ({ type, id, data });
const job = (jobId, type, ts, fields = {}) => ({ jobId, type, ts, ...fields });

function state(overrides) {
  return {
    jobId: 'j1', owner: 'u1', status: 'queued', progress: 0, stage: null, message: null,
    result: null, error: null, createdAt: 1000, updatedAt: 1000, lastEventId: '1000-0', ...overrides,
  };
}

test('a job stream: status, then events fold in by the gateway\'s rules', () => {
  let s = reduceJob(null, ev('status', '1000-0', { ...state(), resync: undefined }));
  assert.deepEqual(s, state());
  s = reduceJob(s, ev('stage', '1001-0', job('j1', 'stage', 1001, { stage: 'Checkout' })));
  assert.deepEqual(s, state({ stage: 'Checkout', updatedAt: 1001, lastEventId: '1001-0' }));
  s = reduceJob(s, ev('progress', '1002-0', job('j1', 'progress', 1002, { progress: 45, stage: 'Encoding', message: 'half way' })));
  assert.deepEqual(s, state({ status: 'active', progress: 45, stage: 'Encoding', message: 'half way', updatedAt: 1002, lastEventId: '1002-0' }));
  // A log line is not a status line: its message stays out of `message`; a log's progress counts.
  s = reduceJob(s, ev('log', '1003-0', job('j1', 'log', 1003, { level: 'info', message: 'frame 10', progress: 50 })));
  assert.deepEqual(s, state({ status: 'active', progress: 50, stage: 'Encoding', message: 'half way', updatedAt: 1003, lastEventId: '1003-0' }));
  // Custom types change the common fields only.
  s = reduceJob(s, ev('thumbnail', '1004-0', job('j1', 'thumbnail', 1004, { url: '/t.png', message: 'preview ready' })));
  assert.deepEqual(s, state({ status: 'active', progress: 50, stage: 'Encoding', message: 'preview ready', updatedAt: 1004, lastEventId: '1004-0' }));
  s = reduceJob(s, ev('complete', '1005-3', job('j1', 'complete', 1005, { result: { url: '/out.mp4' } })));
  assert.deepEqual(s, state({
    status: 'completed', progress: 100, stage: 'Encoding', message: 'preview ready', result: { url: '/out.mp4' },
    updatedAt: 1005, lastEventId: '1005-3',
  }));
  assert.ok(isFinished(s.status));
});

test('failed takes `error`, else `message`; complete without a result sets null; cancelled', () => {
  const base = state({ status: 'active', progress: 30 });
  assert.deepEqual(reduceJob(base, ev('failed', '2-0', job('j1', 'failed', 2, { error: 'disk full' }))),
    state({ status: 'failed', progress: 30, error: 'disk full', updatedAt: 2, lastEventId: '2-0' }));
  assert.deepEqual(reduceJob(base, ev('failed', '2-0', job('j1', 'failed', 2, { message: 'worker lost' }))),
    state({ status: 'failed', progress: 30, error: 'worker lost', message: 'worker lost', updatedAt: 2, lastEventId: '2-0' }));
  assert.deepEqual(reduceJob(base, ev('failed', '2-0', job('j1', 'failed', 2, { error: { code: 'E1' }, message: 'see code' }))),
    state({ status: 'failed', progress: 30, error: { code: 'E1' }, message: 'see code', updatedAt: 2, lastEventId: '2-0' }));
  assert.deepEqual(reduceJob(base, ev('failed', '2-0', job('j1', 'failed', 2))),
    state({ status: 'failed', progress: 30, error: null, updatedAt: 2, lastEventId: '2-0' }));
  assert.deepEqual(reduceJob(base, ev('complete', '2-0', job('j1', 'complete', 2))),
    state({ status: 'completed', progress: 100, result: null, updatedAt: 2, lastEventId: '2-0' }));
  assert.deepEqual(reduceJob(base, ev('cancelled', '2-0', job('j1', 'cancelled', 2, { message: 'superseded' }))),
    state({ status: 'cancelled', progress: 30, message: 'superseded', updatedAt: 2, lastEventId: '2-0' }));
});

test('a progress outside 0-100 or not a number is ignored; a non-string stage too', () => {
  const base = state({ status: 'active', progress: 30, stage: 'A' });
  for (const fields of [{ progress: 101 }, { progress: -1 }, { progress: '50' }, { stage: 7 }]) {
    const next = reduceJob(base, ev('stage', '3-0', job('j1', 'stage', 3, fields)));
    assert.equal(next.progress, 30);
    assert.equal(next.stage, 'A');
  }
});

test('resync: a status snapshot replaces the state wholesale (and drops `resync`)', () => {
  const before = state({ status: 'active', progress: 40, stage: 'Old', message: 'old', lastEventId: '5-0' });
  const snapshot = state({ status: 'active', progress: 90, stage: 'Muxing', updatedAt: 9000, lastEventId: '9000-0' });
  const after = reduceJob(before, ev('status', '9000-0', { ...snapshot, resync: true }));
  assert.deepEqual(after, snapshot);
  assert.equal('resync' in after, false);
});

test('events of another job, notifications and `jobs` leave a job stream\'s state alone (same object)', () => {
  const s = state();
  assert.equal(reduceJob(s, ev('progress', '9-0', job('j2', 'progress', 9, { progress: 5 }))), s);
  assert.equal(reduceJob(s, ev('notice', '9-0', { userId: 'u1', type: 'notice', ts: 9, text: 'hi' })), s);
  assert.equal(reduceJob(s, ev('jobs', '9-0', { userId: 'u1', jobs: [] })), s);
});

test('the reducers never change their input', () => {
  const s = Object.freeze(state());
  reduceJob(s, ev('complete', '9-0', job('j1', 'complete', 9, { result: 1 })));
  const board = Object.freeze({ ...EMPTY_JOBS, jobs: Object.freeze({ j1: s }) });
  reduceJobs(board, ev('progress', '9-0', job('j1', 'progress', 9, { progress: 5 })));
  reduceJobs(board, ev('jobs', '9-0', { userId: 'u1', jobs: [] }));
  assert.deepEqual(s, state());
});

test('a user stream: `jobs` replaces all, events fold into their job, a new job gets the user as owner', () => {
  const a = state({ jobId: 'a', updatedAt: 3000 });
  const b = state({ jobId: 'b', status: 'completed', progress: 100, result: 'ok', updatedAt: 2000 });
  let s = reduceJobs(EMPTY_JOBS, ev('jobs', '3000-0', { userId: 'u1', jobs: [a, b] }));
  assert.deepEqual(s, { jobs: { a, b }, userId: 'u1', lastEventId: '3000-0', resyncs: 0 });
  s = reduceJobs(s, ev('progress', '3001-0', job('c', 'progress', 3001, { progress: 10, stage: 'Fetching' })));
  assert.deepEqual(s.jobs.c, {
    jobId: 'c', owner: 'u1', status: 'active', progress: 10, stage: 'Fetching', message: null,
    result: null, error: null, createdAt: 3001, updatedAt: 3001, lastEventId: '3001-0',
  });
  s = reduceJobs(s, ev('log', '3002-0', job('a', 'log', 3002, { message: 'line' })));
  assert.deepEqual(s.jobs.a, { ...a, updatedAt: 3002, lastEventId: '3002-0' });
  assert.deepEqual(jobsByRecent(s).map((j) => j.jobId), ['a', 'c', 'b']);
  // A notification moves the position only.
  const before = s;
  s = reduceJobs(s, ev('notice', '3003-0', { userId: 'u1', type: 'notice', ts: 3003, text: 'hi' }));
  assert.equal(s.jobs, before.jobs);
  assert.equal(s.lastEventId, '3003-0');
  // A resync snapshot replaces everything: jobs it does not list are gone.
  const c = { ...s.jobs.c, status: 'completed', progress: 100, updatedAt: 5000, lastEventId: '5000-0' };
  s = reduceJobs(s, ev('jobs', '5000-0', { userId: 'u1', jobs: [c], resync: true }));
  assert.deepEqual(s, { jobs: { c }, userId: 'u1', lastEventId: '5000-0', resyncs: 1 });
});

test('a `status` on the user-stream reducer replaces one job; a job stream folds into it too', () => {
  let s = reduceJobs(EMPTY_JOBS, ev('status', '7-0', { ...state(), resync: true }));
  assert.deepEqual(s, { jobs: { j1: state() }, userId: null, lastEventId: '7-0', resyncs: 1 });
  s = reduceJobs(s, ev('progress', '8-0', job('j1', 'progress', 8, { progress: 20 })));
  assert.deepEqual(s.jobs.j1, state({ status: 'active', progress: 20, updatedAt: 8, lastEventId: '8-0' }));
});

test('event ids compare as <ms>-<seq>', () => {
  assert.equal(Math.sign(compareIds('1732245600123-0', '1732245600123-1')), -1);
  assert.equal(Math.sign(compareIds('1732245600124-0', '1732245600123-9')), 1);
  assert.equal(compareIds('5-10', '5-10'), 0);
  assert.equal(Math.sign(compareIds('5-10', '5-9')), 1, 'numerically, not as text');
  assert.equal(compareIds('5', '5-0'), null);
});
