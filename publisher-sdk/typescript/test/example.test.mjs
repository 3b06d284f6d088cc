// The BullMQ example worker (examples/bullmq-worker.mjs) end to end: real BullMQ on a real
// Redis, the worker publishing through the SDK's Redis transport into the Redis a real
// gateway serves, and the job's owner following its stream on the gateway, as a browser
// would: a job that renders, one that fails once and is retried (reopened), one that
// fails for good and is then run again by hand (its finished job reopened).

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';

import { Queue } from 'bullmq';

import { Publisher } from '../dist/index.js';
import { QUEUE, renderWorker } from '../examples/bullmq-worker.mjs';
import { Gateway, RedisServer, follow, mintToken } from './support.mjs';

let redis;
let gateway;
let sse;
let worker;
let queue;

before(async () => {
  redis = await RedisServer.start();
  gateway = await Gateway.start({ redisUrl: redis.url });
  sse = await Publisher.connect(redis.url);
  const connection = { host: '127.0.0.1', port: redis.port, maxRetriesPerRequest: null };
  worker = renderWorker({ connection, sse });
  queue = new Queue(QUEUE, { connection });
});

after(async () => {
  await queue?.close();
  await worker?.close();
  await sse?.close();
  await gateway?.stop();
  await redis?.stop();
});

/** The frames of one job on its owner's stream, up to its terminal event. */
async function framesOf(stream, job) {
  const frames = [];
  for (;;) {
    const frame = await stream.next((f) => f.event !== 'jobs' && JSON.parse(f.data).jobId === job);
    frames.push({ event: frame.event, ...JSON.parse(frame.data) });
    if (['complete', 'failed', 'cancelled'].includes(frame.event)) return frames;
  }
}

async function stateOf(job, owner) {
  const response = await fetch(`${gateway.url}/v1/jobs/${job}`, { headers: { authorization: `Bearer ${mintToken(owner)}` } });
  assert.equal(response.status, 200);
  return response.json();
}

test("a BullMQ job's progress reaches its owner's stream, through the gateway", async () => {
  const stream = await follow(`${gateway.url}/v1/users/me/events`, mintToken('alice'));
  try {
    await stream.next((f) => f.event === 'jobs');
    const added = await queue.add('render', { owner: 'alice', frames: 4 });
    const frames = await framesOf(stream, `render-${added.id}`);
    assert.deepEqual(
      frames.map((f) => [f.event, f.progress ?? null, f.stage ?? null]),
      [
        ['stage', null, 'Rendering'],
        ['progress', 25, 'Frame 1/4'],
        ['progress', 50, 'Frame 2/4'],
        ['progress', 75, 'Frame 3/4'],
        ['progress', 100, 'Frame 4/4'],
        ['complete', null, null],
      ],
    );
    const result = { url: `https://cdn.example/renders/${added.id}.mp4`, frames: 4 };
    assert.deepEqual(frames.at(-1).result, result);
    const state = await stateOf(`render-${added.id}`, 'alice');
    assert.equal(state.status, 'completed');
    assert.deepEqual(state.result, result);
    const finished = await queue.getJob(added.id);
    assert.deepEqual(finished.returnvalue, result, 'BullMQ has the same result');
  } finally {
    stream.close();
  }
});

test('a failed attempt is logged and retried; a job BullMQ gives up on ends failed', async () => {
  const stream = await follow(`${gateway.url}/v1/users/me/events`, mintToken('bob'));
  try {
    await stream.next((f) => f.event === 'jobs');
    const retried = await queue.add('render', { owner: 'bob', frames: 2, failAttempts: 1 }, { attempts: 2 });
    const frames = await framesOf(stream, `render-${retried.id}`);
    // The log line is published from BullMQ's `failed` event, which may come after the
    // retry started.
    assert.deepEqual(frames.filter((f) => f.event !== 'log').map((f) => f.event), ['stage', 'stage', 'progress', 'progress', 'complete']);
    const logs = frames.filter((f) => f.event === 'log');
    assert.equal(logs.length, 1);
    assert.match(logs[0].message, /attempt 1 failed \(GPU lost at frame 1\); retrying/);
    assert.equal((await stateOf(`render-${retried.id}`, 'bob')).status, 'completed');

    const doomed = await queue.add('render', { owner: 'bob', frames: 2, failAttempts: 5 }, { attempts: 1 });
    const failed = await framesOf(stream, `render-${doomed.id}`);
    assert.deepEqual(failed.map((f) => f.event), ['stage', 'failed']);
    const state = await stateOf(`render-${doomed.id}`, 'bob');
    assert.equal(state.status, 'failed');
    assert.equal(state.error, 'GPU lost at frame 1');

    // Run again by hand after BullMQ gave up: its first event reopens the finished job.
    await doomed.updateData({ ...doomed.data, failAttempts: 0 });
    await doomed.retry('failed');
    const rerun = await framesOf(stream, `render-${doomed.id}`);
    assert.deepEqual(rerun.map((f) => f.event), ['stage', 'progress', 'progress', 'complete']);
    const reopened = await stateOf(`render-${doomed.id}`, 'bob');
    assert.equal(reopened.status, 'completed');
    assert.equal(reopened.error, null, 'reopening cleared the error');
  } finally {
    stream.close();
  }
});
