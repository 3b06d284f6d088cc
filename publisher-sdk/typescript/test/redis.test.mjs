// The Redis transport against a real redis-server: every accepted fixture case makes
// exactly the fixture's script calls (seen by MONITOR on the server), stores the
// fixture's bytes and puts the fixture's frame on its channel; every refused case sends
// nothing; every scenario has its outcomes. Then the owner cache, and failures: Redis
// down, Redis back, a reply lost after the script ran, a command that timed out, an
// error reply. And TLS: a rediss:// Redis with a private CA and mutual TLS.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { Redis } from 'ioredis';

import { AmbiguousError, InternalError, InvalidArgumentError, JobFinishedError, OwnerConflictError, Publisher, UnavailableError } from '../dist/index.js';
import { PACKAGE, RedisServer, TlsFiles, fixtures, monitor, proxy, publishInput, waitFor } from './support.mjs';

const doc = fixtures();
let redis;

before(async () => {
  redis = await RedisServer.start();
});

after(async () => {
  await redis.stop();
});

/** The channel a case's frame goes out on, with the stream id the publish returned. */
function channelOf(input, publish) {
  return input.kind === 'job' ? publish.args[10] : publish.args[4];
}

test('every fixture case is sent, stored and framed exactly as the fixture says', async () => {
  const seen = await monitor(redis.port);
  const subscriber = new Redis(redis.port, '127.0.0.1');
  const frames = [];
  subscriber.on('pmessage', (_pattern, channel, message) => frames.push({ channel, message }));
  await subscriber.psubscribe('sse:*');
  try {
    for (const { name, input, expect } of doc.cases) {
      // A publisher per case, so every job case registers its owner (no cached owner).
      const publisher = await Publisher.connect(redis.url, { now: () => input.ts });
      try {
        if (expect.error) {
          await assert.rejects(publishInput(publisher, input), (e) => e instanceof InvalidArgumentError && e.code === expect.error, name);
          continue;
        }
        const id = await publishInput(publisher, input);
        const wanted = input.kind === 'job' ? [expect.registerOwner, expect.publish] : [expect.publish];
        assert.deepEqual(await seen.take(wanted.length), wanted, `${name}: the script calls on the server`);

        const streamKey = input.kind === 'job' ? expect.publish.keys[1] : expect.publish.keys[0];
        const entries = await redis.redis().xrange(streamKey, id, id);
        assert.equal(entries.length, 1, `${name}: entry ${id} in ${streamKey}`);
        const [, fields] = entries[0];
        assert.deepEqual(fields, ['type', input.type, 'data', expect.dataJson], `${name}: the stored entry`);

        const channel = channelOf(input, expect.publish);
        const frame = await waitFor(`${name}: a frame on ${channel}`, () => frames.find((f) => f.channel === channel));
        frames.splice(0, frames.length);
        assert.equal(frame.message, expect.frame.replace(`id: ${doc.sampleId}\n`, `id: ${id}\n`), `${name}: the frame`);
      } finally {
        await publisher.close();
      }
    }
    assert.equal(seen.calls.length, 0, 'refused cases sent no script');
  } finally {
    seen.close();
    subscriber.disconnect();
  }
});

test('every fixture scenario has its outcomes', async () => {
  await redis.redis().flushall();
  const publisher = await Publisher.connect(redis.url);
  try {
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
        if (expect.sameIdAsStep !== undefined) {
          assert.equal(id, ids[expect.sameIdAsStep], `${name}, step ${n}: the first id`);
        }
        if (expect.state) {
          const hash = await redis.redis().hgetall(`sse:{u:${input.owner}}:job:${input.job}`);
          for (const [field, value] of Object.entries(expect.state)) {
            assert.deepEqual(JSON.parse(hash[field]), value, `${name}, step ${n}: ${field}`);
          }
        }
        ids.push(id);
      }
    }
  } finally {
    await publisher.close();
  }
});

test("a job's owner is registered once, then cached; another owner is refused and publishes nothing", async () => {
  const seen = await monitor(redis.port);
  const publisher = await Publisher.connect(redis.url);
  try {
    const job = publisher.job('cached-1', 'alice');
    await job.stage('one');
    await job.stage('two');
    await job.progress(50);
    const calls = await seen.take(4);
    assert.deepEqual(calls.map((c) => c.script), ['register_owner', 'publish_job', 'publish_job', 'publish_job']);
    await assert.rejects(publisher.job('cached-1', 'mallory').stage('mine'), (e) => e instanceof OwnerConflictError && e.job === 'cached-1');
    assert.deepEqual((await seen.take(1)).map((c) => c.script), ['register_owner'], 'checked against Redis, not published');
    assert.equal(await redis.redis().exists('sse:{u:mallory}:joblog:cached-1'), 0);
    assert.equal(await redis.redis().xlen('sse:{u:alice}:joblog:cached-1'), 3);
  } finally {
    seen.close();
    await publisher.close();
  }
});

test('Redis down: connecting fails, and a publish is retried, then reported unavailable', async () => {
  const down = await RedisServer.start();
  const publisher = await Publisher.connect(down.url, { retry: { attempts: 4, initialBackoffMs: 10, maxBackoffMs: 40 } });
  try {
    await down.kill();
    await assert.rejects(Publisher.connect(down.url, { connectTimeoutMs: 500 }), (e) => e instanceof UnavailableError);
    await assert.rejects(publisher.notify('u1', 'notice', { n: 1 }), (e) => {
      assert.ok(e instanceof UnavailableError, String(e));
      assert.equal(e.attempts, 4);
      assert.ok(e.isTransient());
      return true;
    });
  } finally {
    await publisher.close();
    await down.stop();
  }
});

test('Redis back while a publish is retrying: the event is published, once', async () => {
  const server = await RedisServer.start();
  const publisher = await Publisher.connect(server.url, { retry: { attempts: 200, initialBackoffMs: 20, maxBackoffMs: 50 } });
  try {
    await server.kill();
    const published = publisher.notify('u1', 'notice', { n: 2 });
    await server.spawn();
    const id = await published;
    const entries = await server.redis().xrange('sse:{u:u1}:log', '-', '+');
    assert.deepEqual(entries.map(([entryId]) => entryId), [id]);
  } finally {
    await publisher.close();
    await server.stop();
  }
});

test('a reply lost after the script ran: ambiguous without an idempotency key, published once with one', async () => {
  const lossy = await proxy(redis.port);
  const publisher = await Publisher.connect(`redis://127.0.0.1:${lossy.port}`, {
    retry: { attempts: 20, initialBackoffMs: 10, maxBackoffMs: 50 },
    // The lost command's own timer (ioredis keeps it until then) ends soon after the test.
    commandTimeoutMs: 1000,
  });
  const stream = 'sse:{u:lost}:log';
  try {
    await redis.redis().del(stream);
    lossy.loseReplyTo('"n":1');
    await assert.rejects(publisher.notify('lost', 'notice', { n: 1 }), (e) => e instanceof AmbiguousError && e.isTransient());
    assert.equal(lossy.armed, false, 'the reply was lost');
    assert.equal(await redis.redis().xlen(stream), 1, 'yet the event was published: the outcome really was unknown');

    lossy.loseReplyTo('lost-2');
    const id = await publisher.notify('lost', 'notice', { n: 2 }, { idempotencyKey: 'lost-2' });
    assert.equal(lossy.armed, false, 'the first attempt lost its reply');
    const entries = await redis.redis().xrange(stream, '-', '+');
    assert.equal(entries.length, 2, 'the retry published nothing more');
    assert.equal(entries[1][0], id, "the retry answered the first attempt's id");
    assert.equal(await redis.redis().get('sse:{u:lost}:idem:lost-2'), id);
  } finally {
    await publisher.close();
    await lossy.close();
  }
});

test('a command that outlives its timeout is ambiguous: it may still run', async () => {
  const publisher = await Publisher.connect(redis.url, { commandTimeoutMs: 200 });
  const stream = 'sse:{u:slow}:log';
  try {
    await redis.redis().del(stream);
    await redis.redis().client('PAUSE', '600', 'WRITE');
    await assert.rejects(publisher.notify('slow', 'notice', {}), (e) => e instanceof AmbiguousError && /timed out/.test(e.message));
    await waitFor('the paused publish to run after all', async () => (await redis.redis().xlen(stream)) === 1);
  } finally {
    await redis.redis().client('UNPAUSE');
    await publisher.close();
  }
});

test('an error reply from a script is an internal error, not retried', async () => {
  const seen = await monitor(redis.port);
  const publisher = await Publisher.connect(redis.url);
  try {
    await redis.redis().set('sse:{u:broken}:log', 'not a stream');
    await assert.rejects(publisher.notify('broken', 'notice', {}), (e) => e instanceof InternalError && /WRONGTYPE/.test(e.message));
    assert.equal((await seen.take(1)).length, 1, 'one call: not retried');
    await new Promise((resolve) => setImmediate(resolve));
  } finally {
    seen.close();
    await publisher.close();
  }
});

test('rediss:// with a private CA and a client certificate (mutual TLS)', async () => {
  const files = new TlsFiles();
  const server = await RedisServer.startTls(files, { clients: true });
  const fast = { connectTimeoutMs: 2000 };
  try {
    assert.match(server.url, /^rediss:\/\//);
    // The test CA is not among the system's roots: the server is not trusted.
    await assert.rejects(Publisher.connect(server.url, fast), (e) => e instanceof UnavailableError && /redis:/.test(e.message));
    // Trusted, but the server asks for a client certificate and gets none.
    await assert.rejects(
      Publisher.connect(server.url, { ...fast, redis: { tls: { ca: files.clientOptions().ca } } }),
      (e) => e instanceof UnavailableError,
    );
    const publisher = await Publisher.connect(server.url, { ...fast, redis: { tls: files.clientOptions() } });
    try {
      const id = await publisher.job('tls-1', 'alice').progress(10, 'over TLS');
      const entries = await server.redis().xrange('sse:{u:alice}:joblog:tls-1', '-', '+');
      assert.deepEqual(entries.map(([entry]) => entry), [id]);
      assert.equal(JSON.parse(entries[0][1][entries[0][1].indexOf('data') + 1]).progress, 10);
    } finally {
      await publisher.close();
    }
  } finally {
    await server.stop();
    files.remove();
  }
});

test('the packed package, installed in another project, publishes with its own copy of the scripts', async () => {
  const project = mkdtempSync(path.join(os.tmpdir(), 'sse-ts-consumer-'));
  try {
    const [pack] = JSON.parse(
      execFileSync('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', project], { cwd: PACKAGE, encoding: 'utf8' }),
    );
    const installed = path.join(project, 'node_modules', '@sse-gateway', 'publisher');
    mkdirSync(installed, { recursive: true });
    execFileSync('tar', ['xzf', path.join(project, pack.filename), '-C', installed, '--strip-components=1']);
    // The runtime dependency, as npm would have installed it beside the package.
    symlinkSync(path.join(PACKAGE, 'node_modules', 'ioredis'), path.join(project, 'node_modules', 'ioredis'));
    writeFileSync(
      path.join(project, 'worker.mjs'),
      `import { Publisher } from '@sse-gateway/publisher';
const publisher = await Publisher.connect(process.argv[2]);
console.log(await publisher.job('packed-1', 'alice').progress(10, 'Packed'));
await publisher.close();
`,
    );
    const id = execFileSync(process.execPath, ['worker.mjs', redis.url], { cwd: project, encoding: 'utf8' }).trim();
    const entries = await redis.redis().xrange('sse:{u:alice}:joblog:packed-1', id, id);
    assert.equal(entries.length, 1);
  } finally {
    rmSync(project, { recursive: true, force: true });
  }
});
