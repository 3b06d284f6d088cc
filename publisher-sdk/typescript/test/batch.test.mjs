// Batches (`publisher.batch()`): the batch script assembled from the shipped Lua exactly as
// sse-wire assembles it (its SHA1 is the fixtures'), the fixtures' batch calls and HTTP
// requests; then against a real redis-server and a real gateway, over both transports:
// events of several jobs of two users (two hash tags) reach their streams once and in
// order, per-event errors, the HTTP limits; and concurrent publishes pipelined.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';

import { Redis } from 'ioredis';

import { JobFinishedError, OwnerConflictError, InvalidArgumentError, Publisher, wire } from '../dist/index.js';
import { draft } from '../dist/draft.js';
import { batchRequests, elementOf } from '../dist/http.js';
import { luaScripts } from '../dist/lua.js';
import { Gateway, RedisServer, fixtures, follow, mintToken } from './support.mjs';

const doc = fixtures();
let redis;
let gateway;

before(async () => {
  redis = await RedisServer.start();
  gateway = await Gateway.start({ redisUrl: redis.url });
});

after(async () => {
  await gateway?.stop();
  await redis?.stop();
});

function checked(input) {
  const target =
    input.kind === 'job' ? { kind: 'job', job: input.job, owner: input.owner } : input.kind === 'user' ? { kind: 'user', user: input.user } : { kind: 'topic', topic: input.topic };
  const options = { correlationId: input.correlationId, traceparent: input.traceparent, idempotencyKey: input.idempotencyKey, reopen: input.reopen };
  return draft(target, input.type, input.data, options);
}

/** An event's own script call, as the single publish makes it. */
function singleCall(input, ts) {
  const d = checked(input);
  const keys = new wire.Keys(doc.prefix);
  const subject = input.kind === 'job' ? { kind: 'job', job: input.job } : input.kind === 'user' ? { kind: 'user', user: input.user } : { kind: 'topic', topic: input.topic };
  const dataJson = wire.renderEventData(subject, input.type, ts, d.options, d.fields);
  if (input.kind === 'job') {
    return wire.publishJobCall(keys, { job: input.job, owner: input.owner, eventType: input.type, dataJson, ts, patch: d.patch }, d.options, doc.retention, 'PUBLISH');
  }
  if (input.kind === 'user') return wire.publishUserCall(keys, input.user, input.type, dataJson, d.options, doc.retention, 'PUBLISH');
  return wire.publishTopicCall(keys, input.topic, input.type, dataJson, d.options, doc.retention, 'PUBLISH');
}

test('the batch script is assembled from the shipped Lua as sse-wire assembles it', () => {
  assert.equal(createHash('sha1').update(luaScripts().publish_batch).digest('hex'), doc.publishBatchSha1);
});

for (const { name, input, expect } of doc.batches) {
  test(`fixture batch: ${name}`, () => {
    const calls = input.events.map((event) => singleCall(event, input.ts));
    const plain = (call) => ({ script: call.script, keys: call.keys, args: call.args });
    assert.deepEqual([plain(wire.publishBatchCall(calls))], expect.oneRedis);
    const groups = new Map();
    for (const call of calls) {
      const tag = wire.hashTag(call.keys[0]);
      groups.set(tag, [...(groups.get(tag) ?? []), call]);
    }
    assert.deepEqual(
      [...groups].map(([tag, group]) => ({ tag, call: plain(wire.publishBatchCall(group)) })),
      expect.perHashTag,
    );
    const drafts = input.events.map(checked);
    const requests = batchRequests(drafts).map((indexes, n) => {
      const traceparent = drafts[indexes[0]].options.traceparent;
      const body = JSON.stringify(indexes.map((i) => elementOf(drafts[i])));
      assert.equal(body, JSON.stringify(expect.http[n]?.body), "the body's bytes, in the gateway's field order");
      return { method: 'POST', path: '/v1/events:batch', headers: traceparent ? { traceparent } : {}, body: JSON.parse(body) };
    });
    assert.deepEqual(requests, expect.http);
  });
}

async function evalshaCalls() {
  const client = new Redis(redis.url);
  try {
    const info = await client.info('commandstats');
    return Number(/cmdstat_evalsha:calls=(\d+)/.exec(info)?.[1] ?? 0);
  } finally {
    client.disconnect();
  }
}

const transports = () => [
  ['redis', () => Publisher.connect(redis.url)],
  ['http', async () => Publisher.http(gateway.url, mintToken('worker', 'publisher'))],
];

test("a batch of two users' jobs reaches their streams once and in order", async () => {
  for (const [via, make] of transports()) {
    const publisher = await make();
    const streams = {
      alice: await follow(`${gateway.url}/v1/users/me/events`, mintToken('alice')),
      bob: await follow(`${gateway.url}/v1/users/me/events`, mintToken('bob')),
    };
    try {
      for (const stream of Object.values(streams)) assert.equal((await stream.next()).event, 'jobs');
      const [a1, a2, b1] = [publisher.job(`${via}-a1`, 'alice'), publisher.job(`${via}-a2`, 'alice'), publisher.job(`${via}-b1`, 'bob')];
      // Owners registered and the script loaded by a first batch: the next is one call.
      const first = await publisher.batch().event(a1, 'stage', { stage: 'q' }).event(a2, 'stage', { stage: 'q' }).event(b1, 'stage', { stage: 'q' }).send();
      assert.ok(first.every((r) => r.status === 'fulfilled'), JSON.stringify(first));
      for (const stream of Object.values(streams)) {
        for (let n = 0; n < (stream === streams.alice ? 2 : 1); n += 1) assert.equal((await stream.next()).event, 'stage');
      }
      const calls = await evalshaCalls();
      const results = await publisher
        .batch()
        .progress(a1, 10)
        .progress(b1, 50)
        .event(a2, 'stage', { stage: 'encode' })
        .notify('alice', 'notice', { text: 'half way' })
        .progress(a1, 20)
        .notify('bob', 'notice', { text: 'b' })
        .event(b1, 'complete', { result: { url: 'x' } })
        .event(a1, 'complete', { result: null })
        .send();
      assert.ok(results.every((r) => r.status === 'fulfilled'), `${via} ${JSON.stringify(results)}`);
      const ids = results.map((r) => r.value);
      if (via === 'redis') assert.equal((await evalshaCalls()) - calls, 1, 'one script call for the batch');
      const expected = {
        alice: [[0, 'progress', a1.id], [2, 'stage', a2.id], [3, 'notice', 'alice'], [4, 'progress', a1.id], [7, 'complete', a1.id]],
        bob: [[1, 'progress', b1.id], [5, 'notice', 'bob'], [6, 'complete', b1.id]],
      };
      for (const [user, events] of Object.entries(expected)) {
        const sentinel = await publisher.notify(user, 'sentinel', {});
        for (const [index, type, subject] of events) {
          const frame = await streams[user].next();
          const data = JSON.parse(frame.data);
          assert.deepEqual([frame.event, data[type === 'notice' ? 'userId' : 'jobId']], [type, subject], `${via} ${user}`);
          if (type === 'notice') assert.equal(frame.id, ids[index]);
        }
        const next = await streams[user].next();
        assert.deepEqual([next.id, next.event], [sentinel, 'sentinel'], `${via} ${user}: nothing more, no duplicate`);
      }
    } finally {
      for (const stream of Object.values(streams)) stream.close();
      await publisher.close();
    }
  }
});

test('refused events fail alone, with typed errors', async () => {
  const setup = await Publisher.connect(redis.url);
  for (const [via, make] of transports()) {
    await setup.job(`${via}-done`, 'alice').complete();
    await setup.job(`${via}-taken`, 'alice').stage('a');
    const publisher = await make();
    try {
      const [ok, done] = [publisher.job(`${via}-ok`, 'bob'), publisher.job(`${via}-done`, 'alice')];
      const key = { idempotencyKey: `${via}-k` };
      const results = await publisher
        .batch()
        .event(ok, 'stage', { stage: '1' })
        .event(done, 'stage', { stage: 'late' })
        .event(publisher.job(`${via}-taken`, 'bob'), 'stage', { stage: 'x' })
        .progress(ok, 101)
        .notify('no/slash', 'notice', {})
        .event(done, 'stage', { stage: 'again' }, { reopen: true })
        .event(ok, 'stage', { stage: 'k' }, key)
        .event(ok, 'stage', { stage: 'k' }, key)
        .event(ok, 'stage', { stage: '2' })
        .send();
      assert.equal(results.length, 9);
      assert.ok(results[1].reason instanceof JobFinishedError, via);
      assert.ok(results[2].reason instanceof OwnerConflictError, via);
      assert.ok(results[3].reason instanceof InvalidArgumentError && results[3].reason.code === 'invalid_event', via);
      assert.ok(results[4].reason instanceof InvalidArgumentError && results[4].reason.code === 'invalid_id', via);
      for (const i of [0, 5, 6, 7, 8]) assert.equal(results[i].status, 'fulfilled', `${via} ${i}: ${results[i].reason}`);
      assert.equal(results[6].value, results[7].value, 'a repeated idempotency key: the first id');
      const client = new Redis(redis.url);
      const entries = await client.xrange(`sse:{u:bob}:joblog:${via}-ok`, '-', '+');
      client.disconnect();
      assert.deepEqual(entries.map(([, fields]) => JSON.parse(fields[fields.indexOf('data') + 1]).stage), ['1', 'k', '2'], via);
    } finally {
      await publisher.close();
    }
  }
  await setup.close();
});

test("HTTP batches are split at the gateway's limit and by traceparent", async () => {
  const limited = await Gateway.start({ args: ['--max-batch-events', '3', '--max-body-bytes', '131072'] });
  try {
    const publisher = Publisher.http(limited.url, mintToken('worker', 'publisher'));
    const job = publisher.job('long', 'alice');
    const tp1 = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
    const tp2 = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
    const batch = publisher.batch();
    for (let n = 0; n < 10; n += 1) {
      const traceparent = { 4: tp1, 5: tp1, 6: tp2 }[n];
      batch.progress(job, n * 10, undefined, traceparent ? { traceparent } : {});
    }
    batch.event(job, 'blob', { x: 'x'.repeat(70 * 1024) });
    const results = await batch.send();
    assert.ok(results.every((r) => r.status === 'fulfilled'), JSON.stringify(results.map((r) => String(r.reason))));
    const stream = await follow(`${limited.url}/v1/jobs/long/events?lastEventId=0-0`, mintToken('alice'));
    try {
      const seen = [];
      for (let n = 0; n < 11; n += 1) seen.push(await stream.next());
      assert.deepEqual(seen.map((f) => f.id), results.map((r) => r.value));
      assert.deepEqual(seen.map((f) => JSON.parse(f.data).progress), [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, undefined]);
      assert.deepEqual(seen.slice(3, 8).map((f) => JSON.parse(f.data).traceparent), [undefined, tp1, tp1, tp2, undefined]);
    } finally {
      stream.close();
    }
  } finally {
    await limited.stop();
  }
});

test('concurrent publishes are pipelined: Redis reads them in far fewer reads than publishes', async () => {
  const publisher = await Publisher.connect(redis.url);
  const client = new Redis(redis.url);
  try {
    await publisher.notify('warm', 'notice', {});
    const reads = async () => Number(/total_reads_processed:(\d+)/.exec(await client.info('stats'))?.[1]);
    const before = await reads();
    const ids = await Promise.all(Array.from({ length: 200 }, (_, n) => publisher.notify(`p${n % 10}`, 'notice', { n })));
    assert.equal(new Set(ids.map((id, n) => `${n % 10}/${id}`)).size, 200);
    const used = (await reads()) - before - 1; // the INFO of `before` itself
    assert.ok(used < 50, `${used} reads for 200 concurrent publishes`);
  } finally {
    client.disconnect();
    await publisher.close();
  }
});
