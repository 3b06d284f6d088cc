// The HTTP transport against real gateway processes, on the embedded broker and on Redis:
// every accepted fixture case is published (and, on Redis, stored with the fixture's
// bytes; on both, received by the owner's stream as the fixture's frame), every scenario
// has its outcomes; then the gateway's refusals as typed errors — 401/403, 413, 409, 503
// while Redis is down, 500 on a script error — and a reply lost on the way back, retried
// safely with an idempotency key.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import {
  AmbiguousError,
  InternalError,
  JobFinishedError,
  OwnerConflictError,
  Publisher,
  RejectedError,
  UnauthorizedError,
  UnavailableError,
} from '../dist/index.js';
import { Gateway, RedisServer, fixtures, follow, mintToken, proxy, publishInput } from './support.mjs';

const doc = fixtures();
const FAST = { attempts: 3, initialBackoffMs: 10, maxBackoffMs: 40 };

/** Runs every scenario through `publisher`; `state(input)` reads a job's state. */
async function runScenarios(publisher, state) {
  for (const { name, steps } of doc.scenarios) {
    const ids = [];
    for (const [n, { input, expect }] of steps.entries()) {
      let outcome;
      let id = null;
      try {
        id = await publishInput(publisher, input);
        outcome = expect.sameIdAsStep === undefined ? 'published' : 'duplicate';
      } catch (error) {
        if (error instanceof OwnerConflictError) outcome = 'owner_conflict';
        else if (error instanceof JobFinishedError) outcome = 'job_finished';
        else throw error;
      }
      assert.equal(outcome, expect.outcome, `${name}, step ${n}`);
      if (expect.sameIdAsStep !== undefined) assert.equal(id, ids[expect.sameIdAsStep], `${name}, step ${n}: the first id`);
      if (expect.state) {
        const current = await state(input);
        for (const [field, value] of Object.entries(expect.state)) {
          assert.deepEqual(current[field], value, `${name}, step ${n}: ${field}`);
        }
      }
      ids.push(id);
    }
  }
}

/** The job state as its owner reads it from the gateway. */
function stateVia(gateway) {
  return async (input) => {
    const response = await fetch(`${gateway.url}/v1/jobs/${input.job}`, {
      headers: { authorization: `Bearer ${mintToken(input.owner)}` },
    });
    assert.equal(response.status, 200);
    return response.json();
  };
}

for (const backend of ['memory', 'redis']) {
  describe(`a gateway on the ${backend === 'memory' ? 'embedded broker' : 'Redis backend'}`, () => {
    let redis = null;
    let gateway;
    let publisher;

    before(async () => {
      if (backend === 'redis') redis = await RedisServer.start();
      gateway = await Gateway.start({ redisUrl: redis?.url });
      publisher = Publisher.http(gateway.url, mintToken('worker', 'publisher'), { retry: FAST });
    });

    after(async () => {
      await publisher.close();
      await gateway.stop();
      await redis?.stop();
    });

    test('every accepted fixture case is published, stored and framed as the fixture says', async () => {
      const accepted = doc.cases.filter((c) => !c.expect.error);
      // Each owner's (or user's) stream, opened before anything is published.
      const streams = new Map();
      for (const { input } of accepted) {
        const user = input.kind === 'job' ? input.owner : input.user;
        if (user !== undefined && !streams.has(user)) {
          const stream = await follow(`${gateway.url}/v1/users/me/events`, mintToken(user));
          await stream.next((f) => f.event === 'jobs');
          streams.set(user, stream);
        }
      }
      try {
        for (const { name, input, expect } of accepted) {
          const id = await publishInput(publisher, input);
          assert.match(id, /^[0-9]+-[0-9]+$/, name);
          const user = input.kind === 'job' ? input.owner : input.user;
          let ts = null;
          if (user !== undefined) {
            const frame = await streams.get(user).next((f) => f.event === input.type);
            ts = JSON.parse(frame.data).ts;
            const wanted = expect.frame
              .replace(`id: ${doc.sampleId}\n`, `id: ${frame.id}\n`)
              .replace(`"ts":${input.ts}`, `"ts":${ts}`);
            assert.equal(frame.raw, wanted, `${name}: the frame the owner receives`);
            if (backend === 'memory' || input.kind === 'user') assert.equal(frame.id, id, `${name}: the id`);
          }
          if (redis) {
            const streamKey = input.kind === 'job' ? expect.publish.keys[1] : expect.publish.keys[0];
            const entries = await redis.redis().xrange(streamKey, id, id);
            assert.equal(entries.length, 1, `${name}: entry ${id} in ${streamKey}`);
            const data = entries[0][1][3];
            ts ??= JSON.parse(data).ts;
            assert.equal(data, expect.dataJson.replace(`"ts":${input.ts}`, `"ts":${ts}`), `${name}: the stored data`);
          }
        }
      } finally {
        for (const stream of streams.values()) stream.close();
      }
    });

    test('every fixture scenario has its outcomes', async () => {
      await runScenarios(publisher, stateVia(gateway));
    });

    test("the gateway's refusals are typed errors", async () => {
      const forged = Publisher.http(gateway.url, `${mintToken('worker', 'publisher')}x`, { retry: FAST });
      await assert.rejects(forged.notify('u1', 'notice', {}), (e) => e instanceof UnauthorizedError && e.status === 401 && !e.isTransient());
      const user = Publisher.http(gateway.url, mintToken('u1'), { retry: FAST });
      await assert.rejects(user.notify('u1', 'notice', {}), (e) => e instanceof UnauthorizedError && e.status === 403 && e.code === 'forbidden');
      await assert.rejects(publisher.notify('u1', 'notice', { text: 'x'.repeat(70_000) }), (e) => {
        assert.ok(e instanceof RejectedError, String(e));
        assert.equal(e.status, 413);
        assert.equal(e.code, 'payload_too_large');
        return true;
      });
      await publisher.job('refusals-1', 'alice').stage('a');
      await assert.rejects(publisher.job('refusals-1', 'bob').stage('b'), (e) => e instanceof OwnerConflictError && e.job === 'refusals-1');
    });
  });
}

describe('a gateway on Redis, failing', () => {
  let redis;
  let gateway;
  let publisher;

  before(async () => {
    redis = await RedisServer.start();
    gateway = await Gateway.start({ redisUrl: redis.url });
    publisher = Publisher.http(gateway.url, mintToken('worker', 'publisher'), { retry: FAST });
  });

  after(async () => {
    await publisher.close();
    await gateway.stop();
    await redis.stop();
  });

  test('a reply lost on the way back: ambiguous without an idempotency key, published once with one', async () => {
    const lossy = await proxy(Number(gateway.addr.split(':').at(-1)));
    const through = Publisher.http(`http://127.0.0.1:${lossy.port}`, mintToken('worker', 'publisher'), { retry: FAST });
    const stream = 'sse:{u:lost}:log';
    try {
      lossy.loseReplyTo('"n":1');
      await assert.rejects(through.notify('lost', 'notice', { n: 1 }), (e) => e instanceof AmbiguousError);
      assert.equal(lossy.armed, false);
      assert.equal(await redis.redis().xlen(stream), 1, 'the gateway did publish it');

      lossy.loseReplyTo('"n":2');
      const id = await through.notify('lost', 'notice', { n: 2 }, { idempotencyKey: 'lost-http-2' });
      assert.equal(lossy.armed, false, 'the first attempt lost its reply');
      const entries = await redis.redis().xrange(stream, '-', '+');
      assert.equal(entries.length, 2, 'the retry (answered 200) published nothing more');
      assert.equal(entries[1][0], id, "the retry answered the first attempt's id");
    } finally {
      await through.close();
      await lossy.close();
    }
  });

  test('a script error is an internal error (500), not retried', async () => {
    await redis.redis().set('sse:{u:broken}:log', 'not a stream');
    await assert.rejects(publisher.notify('broken', 'notice', {}), (e) => e instanceof InternalError && !e.isTransient());
  });

  test('Redis down: 503, retried, then unavailable; Redis back: published', async () => {
    await redis.kill();
    await assert.rejects(publisher.notify('u1', 'notice', { n: 1 }), (e) => {
      assert.ok(e instanceof UnavailableError, String(e));
      assert.equal(e.attempts, FAST.attempts);
      assert.match(e.message, /503 broker_unavailable/);
      return true;
    });
    const patient = Publisher.http(gateway.url, mintToken('worker', 'publisher'), {
      retry: { attempts: 100, initialBackoffMs: 50, maxBackoffMs: 200 },
    });
    const published = patient.notify('u1', 'notice', { n: 2 });
    await redis.spawn();
    const id = await published;
    const entries = await redis.redis().xrange('sse:{u:u1}:log', '-', '+');
    assert.deepEqual(entries.map(([entryId]) => entryId), [id]);
  });
});
