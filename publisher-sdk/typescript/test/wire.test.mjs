// The package against the shared wire fixtures (publisher-sdk/wire/fixtures/wire-cases.json),
// the file the Rust crates, the Python SDK and the gateway are tested against too: for each
// accepted case the exact data JSON, script calls (keys and arguments), frame and HTTP
// request; for each refused case the refusal, with the fixture's code, before anything is
// sent. Then the Lua copy this package ships, byte for byte, and the pure parts (ids,
// envelope, backoff, owner cache, error classes) on exact values.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';

import * as sdk from '../dist/index.js';
import { draft } from '../dist/draft.js';
import { requestOf } from '../dist/http.js';
import { OwnerCache } from '../dist/owner-cache.js';
import { classifyRedisError } from '../dist/redis.js';
import { Refused } from '../dist/errors.js';
import { PACKAGE, REPO, fixtures, publishInput } from './support.mjs';

const { wire, Publisher, InvalidArgumentError } = sdk;
const doc = fixtures();

function targetOf(input) {
  if (input.kind === 'job') return { kind: 'job', job: input.job, owner: input.owner };
  if (input.kind === 'user') return { kind: 'user', user: input.user };
  return { kind: 'topic', topic: input.topic };
}

function optionsOf(input) {
  return {
    correlationId: input.correlationId,
    traceparent: input.traceparent,
    idempotencyKey: input.idempotencyKey,
    reopen: input.reopen,
  };
}

test('the fixtures are the contract this package is held to', () => {
  assert.equal(doc.prefix, 'sse:');
  assert.deepEqual(doc.retention, { ...wire.DEFAULT_RETENTION }, 'the fixtures use the default retention');
  const kinds = new Set(doc.cases.map((c) => c.input.kind));
  assert.deepEqual([...kinds].sort(), ['job', 'topic', 'user']);
  assert.ok(doc.cases.filter((c) => c.expect.error).length >= 10);
  assert.ok(doc.scenarios.length >= 3);
});

for (const { name, input, expect } of doc.cases) {
  if (expect.error) continue;
  test(`fixture: ${name}`, () => {
    const checked = draft(targetOf(input), input.type, input.data, optionsOf(input));
    const subject =
      input.kind === 'job' ? { kind: 'job', job: input.job } : input.kind === 'user' ? { kind: 'user', user: input.user } : { kind: 'topic', topic: input.topic };
    const dataJson = wire.renderEventData(subject, input.type, input.ts, checked.options, checked.fields);
    assert.equal(dataJson, expect.dataJson, 'the data JSON, byte for byte');

    const keys = new wire.Keys(doc.prefix);
    const retention = doc.retention;
    const call = (c) => ({ script: c.script, keys: c.keys, args: c.args });
    if (input.kind === 'job') {
      assert.deepEqual(call(wire.registerOwnerCall(keys, input.job, input.owner, retention)), expect.registerOwner);
      const event = { job: input.job, owner: input.owner, eventType: input.type, dataJson, ts: input.ts, patch: checked.patch };
      assert.deepEqual(call(wire.publishJobCall(keys, event, checked.options, retention, 'PUBLISH')), expect.publish);
    } else if (input.kind === 'user') {
      assert.equal(expect.registerOwner, undefined);
      assert.deepEqual(call(wire.publishUserCall(keys, input.user, input.type, dataJson, checked.options, retention, 'PUBLISH')), expect.publish);
    } else {
      assert.deepEqual(call(wire.publishTopicCall(keys, input.topic, input.type, dataJson, checked.options, retention, 'PUBLISH')), expect.publish);
    }

    assert.equal(wire.renderEventFrame(doc.sampleId, input.type, dataJson), expect.frame, 'the frame');

    const request = requestOf(checked);
    assert.equal(request.method, expect.http.method);
    assert.equal(request.path, expect.http.path);
    assert.deepEqual(request.headers, expect.http.headers);
    // The body as the gateway's serializer writes the fixture's body: same keys, same order.
    assert.equal(request.body, JSON.stringify(expect.http.body));
  });
}

test('every refused fixture case is refused with its code, before anything is sent', async () => {
  let requests = 0;
  const server = http.createServer((req, res) => {
    requests += 1;
    res.writeHead(500).end();
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  try {
    const publisher = Publisher.http(`http://127.0.0.1:${server.address().port}`, 'token', { retry: { attempts: 1 } });
    const refused = doc.cases.filter((c) => c.expect.error);
    assert.ok(refused.length > 0);
    for (const { name, input, expect } of refused) {
      await assert.rejects(publishInput(publisher, input), (error) => {
        assert.ok(error instanceof InvalidArgumentError, `${name}: ${error}`);
        assert.equal(error.kind, 'invalid_argument');
        assert.equal(error.code, expect.error, name);
        assert.equal(error.isTransient(), false);
        return true;
      });
    }
    assert.equal(requests, 0, 'no request was sent');
  } finally {
    server.close();
  }
});

test('the package ships the Lua scripts byte for byte as publisher-sdk/wire/lua has them', () => {
  const source = path.join(REPO, 'publisher-sdk', 'wire', 'lua');
  const copy = path.join(PACKAGE, 'lua');
  const names = readdirSync(source).filter((n) => n.endsWith('.lua')).sort();
  assert.deepEqual(readdirSync(copy).sort(), names, 'the same files');
  for (const name of names) {
    assert.ok(readFileSync(path.join(copy, name)).equals(readFileSync(path.join(source, name))), `lua/${name} differs from its source`);
  }
  for (const script of ['register_owner', 'publish_job', 'publish_user', 'publish_topic']) {
    assert.ok(names.includes(`${script}.lua`), script);
  }
});

test('the npm package holds the modules, their declarations and the Lua copy, and nothing else', () => {
  const [pack] = JSON.parse(execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: PACKAGE, encoding: 'utf8' }));
  const files = pack.files.map((f) => f.path).sort();
  for (const expected of ['dist/index.js', 'dist/index.d.ts', 'dist/publisher.js', 'dist/wire/envelope.d.ts', 'lua/publish_job.lua', 'lua/register_owner.lua', 'package.json']) {
    assert.ok(files.includes(expected), `${expected} is packed`);
  }
  const stray = files.filter((f) => !/^(dist\/.*\.(js|d\.ts)|lua\/[a-z_]+\.lua|package\.json|README\.md)$/.test(f));
  assert.deepEqual(stray, []);
  const declarations = readFileSync(path.join(PACKAGE, 'dist', 'publisher.d.ts'), 'utf8');
  // `Batch.send()` is public; the publisher's own `send(target, …)` and `sendBatch` are not.
  assert.ok(!declarations.includes('send(target') && !declarations.includes('sendBatch('), 'the internal send() is not declared');
  assert.ok(declarations.includes('send(): Promise<Array<PromiseSettledResult<string>>>'), 'Batch.send() is declared');
});

test('ids, types, correlation ids, idempotency keys and traceparents follow the contract', () => {
  assert.ok(wire.isValidId('job-1.a_b:c'));
  assert.ok(wire.isValidId('x'.repeat(128)));
  for (const bad of ['', 'x'.repeat(129), 'a/b', 'é', 'a\n', 'a b', 'a{b}', 7, null]) {
    assert.ok(!wire.isValidId(bad), JSON.stringify(bad));
  }
  assert.ok(wire.isPublishableType('build.step-2_x'));
  assert.ok(wire.isPublishableType(`a${'b'.repeat(63)}`));
  for (const bad of ['Progress', '1a', `a${'b'.repeat(64)}`, 'status', 'jobs', 'resync', 'error', 'a\n']) {
    assert.ok(!wire.isPublishableType(bad), bad);
  }
  assert.ok(wire.isValidCorrelationId('req 82 (retry)'));
  assert.ok(!wire.isValidCorrelationId('a\nb'));
  assert.ok(!wire.isValidCorrelationId('é'));
  assert.ok(wire.isValidIdempotencyKey('a+b/c=d{}'));
  for (const bad of ['', 'a b', 'k'.repeat(129), 'é']) assert.ok(!wire.isValidIdempotencyKey(bad), bad);
  assert.ok(wire.isValidTraceparent('00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'));
  for (const bad of [
    '',
    '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7',
    '01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
    '00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01',
    '00-00000000000000000000000000000000-00f067aa0ba902b7-01',
    '00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01',
    '00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01',
  ]) {
    assert.ok(!wire.isValidTraceparent(bad), bad);
  }
});

test('the envelope comes first, wins clashes, and keeps integer-like field names after it', () => {
  const data = wire.renderEventData({ kind: 'job', job: 'j1' }, 'progress', 1732245600123, { correlationId: 'c-1' }, {
    stage: 'Encoding', type: 'evil', progress: 45, jobId: 'other', ts: 1,
  });
  assert.equal(data, '{"jobId":"j1","type":"progress","ts":1732245600123,"correlationId":"c-1","stage":"Encoding","progress":45}');
  // A JavaScript object lists "7" before every other key; the envelope still leads.
  const numeric = wire.renderEventData({ kind: 'user', user: 'u1' }, 'notice', 5, {}, { b: 1, 7: 'seven' });
  assert.equal(numeric, '{"userId":"u1","type":"notice","ts":5,"7":"seven","b":1}');
  assert.equal(wire.renderEventFrame('5-0', 'notice', '{"a":"x\\ny"}'), 'id: 5-0\nevent: notice\ndata: {"a":"x\\ny"}\n\n');
});

test('event data is what JSON makes of it, checked before sending', () => {
  const at = new Date(Date.UTC(2026, 0, 2, 3, 4, 5));
  const checked = draft({ kind: 'user', user: 'u1' }, 'notice', { at, gone: undefined, n: 1 });
  assert.deepEqual(checked.fields, { at: '2026-01-02T03:04:05.000Z', n: 1 });
  assert.throws(() => draft({ kind: 'user', user: 'u1' }, 'notice', { big: 1n }), (e) => e.code === 'invalid_body');
  const cyclic = {};
  cyclic.self = cyclic;
  assert.throws(() => draft({ kind: 'user', user: 'u1' }, 'notice', cyclic), (e) => e.code === 'invalid_body');
  const job = { kind: 'job', job: 'j1', owner: 'u1' };
  assert.throws(() => draft(job, 'progress', { progress: Number.NaN }), (e) => e.code === 'invalid_event');
  assert.throws(() => draft(job, 'progress', { progress: -1 }), (e) => e.code === 'invalid_event');
  assert.throws(() => draft(job, 'stage', { stage: 'x' }, { traceparent: 'nope' }), (e) => e.code === 'invalid_traceparent');
  assert.deepEqual(draft(job, 'failed', { error: null, message: 'm' }).patch, [['status', '"failed"'], ['message', '"m"'], ['error', 'null']]);
  assert.deepEqual(draft(job, 'complete', {}).patch, [['status', '"completed"'], ['progress', '100'], ['result', 'null']]);
  assert.deepEqual(draft(job, 'log', { message: 'not the status line', stage: 7 }).patch, []);
});

test('a job handle sends what its method names', async () => {
  const bodies = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (chunk) => { body += chunk; });
    req.on('end', () => {
      bodies.push({ path: req.url, body: JSON.parse(body), auth: req.headers.authorization });
      res.writeHead(201, { 'content-type': 'application/json' }).end(JSON.stringify({ id: `${bodies.length}-0` }));
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  try {
    const publisher = Publisher.http(`http://127.0.0.1:${server.address().port}/`, 'tok');
    const job = publisher.job('j1', 'u1');
    assert.equal(await job.progress(12.5, 'Encoding'), '1-0');
    await job.progress(13);
    await job.stage('Muxing');
    await job.log('warn', 'slow disk');
    await job.complete({ url: 'u' });
    await job.fail(new Error('disk full'));
    await job.cancel('user asked');
    await job.cancel();
    await publisher.topic('news').publish('flash', { a: 1 });
    assert.deepEqual(bodies.map((b) => [b.body.type, b.body.data]), [
      ['progress', { progress: 12.5, stage: 'Encoding' }],
      ['progress', { progress: 13 }],
      ['stage', { stage: 'Muxing' }],
      ['log', { level: 'warn', message: 'slow disk' }],
      ['complete', { result: { url: 'u' } }],
      ['failed', { error: 'disk full' }],
      ['cancelled', { message: 'user asked' }],
      ['cancelled', {}],
      ['flash', { a: 1 }],
    ]);
    assert.equal(bodies[0].path, '/v1/jobs/j1/events');
    assert.equal(bodies[0].auth, 'Bearer tok');
    assert.equal(bodies.at(-1).path, '/v1/topics/news/events');
    await assert.rejects(job.progress(101), (e) => e.code === 'invalid_event');
    await publisher.close();
    await assert.rejects(job.stage('x'), (e) => e instanceof InvalidArgumentError);
  } finally {
    server.close();
  }
});

test('gateway URLs, Redis URLs and tokens are checked', async () => {
  for (const bad of ['not a url', 'http://127.0.0.1:6379', 'redis://', '127.0.0.1:6379']) {
    await assert.rejects(Publisher.connect(bad), (e) => e instanceof InvalidArgumentError && e.code === 'invalid_url', bad);
  }
  for (const bad of ['ftp://x', 'not a url', 'http://h/?q=1']) {
    assert.throws(() => Publisher.http(bad, 't'), (e) => e instanceof InvalidArgumentError && e.code === 'invalid_url', bad);
  }
  assert.throws(() => Publisher.http('http://127.0.0.1:8080', ''), InvalidArgumentError);
  Publisher.http('https://gateway.example/sse/', 't');
});

test('backoff doubles, is capped, jitters within its upper half, and honours a hint', () => {
  const policy = sdk.DEFAULT_RETRY;
  assert.equal(sdk.backoffMs(policy, 0, undefined, () => 1), 50);
  assert.equal(sdk.backoffMs(policy, 0, undefined, () => 0), 25);
  assert.equal(sdk.backoffMs(policy, 1, undefined, () => 1), 100);
  assert.equal(sdk.backoffMs(policy, 10, undefined, () => 1), 2000);
  assert.equal(sdk.backoffMs(policy, 40, undefined, () => 0), 1000);
  for (let i = 0; i < 100; i += 1) {
    const wait = sdk.backoffMs(policy, 3);
    assert.ok(wait >= 200 && wait <= 400, String(wait));
  }
  assert.equal(sdk.backoffMs(policy, 0, 1000, () => 0), 1000, 'Retry-After raises it');
  assert.equal(sdk.backoffMs(policy, 0, 60_000, () => 0), 2000, 'but not past the cap');
});

test('the owner cache trusts an owner for its TTL and stays bounded', () => {
  let now = 0;
  const cache = new OwnerCache(1000, 3, () => now);
  cache.put('j1', 'u1');
  assert.equal(cache.get('j1'), 'u1');
  now = 999;
  assert.equal(cache.get('j1'), 'u1');
  now = 1000;
  assert.equal(cache.get('j1'), undefined, 'expired');
  for (const job of ['a', 'b', 'c', 'd']) cache.put(job, 'u');
  assert.equal(cache.size, 3);
  assert.equal(cache.get('a'), undefined, 'the oldest went');
  assert.equal(cache.get('d'), 'u');
});

test('Redis failures are classified: not run, failed, or unknown', () => {
  const reply = (message) => Object.assign(new Error(message), { name: 'ReplyError' });
  for (const message of ['LOADING Redis is loading', 'TRYAGAIN x', 'CLUSTERDOWN x', 'MASTERDOWN x', 'READONLY x', 'MOVED 1 h:1', 'ASK 1 h:1']) {
    assert.ok(classifyRedisError(reply(message)) instanceof Refused, message);
  }
  for (const message of ['ERR Error running script', 'OOM command not allowed', 'WRONGTYPE x', 'NOPERM x']) {
    assert.ok(classifyRedisError(reply(message)) instanceof sdk.InternalError, message);
  }
  assert.ok(classifyRedisError(new Error("Stream isn't writeable and enableOfflineQueue options is false")) instanceof Refused);
  assert.ok(classifyRedisError(Object.assign(new Error('x'), { name: 'MaxRetriesPerRequestError' })) instanceof Refused);
  for (const message of ['Command timed out', 'Connection is closed.', 'Command aborted due to connection close', 'read ECONNRESET']) {
    assert.ok(classifyRedisError(new Error(message)) instanceof sdk.AmbiguousError, message);
  }
});

test('error kinds tell whether trying again may help', () => {
  assert.ok(new sdk.UnavailableError(3, 'x').isTransient());
  assert.ok(new sdk.AmbiguousError('x').isTransient());
  for (const error of [
    new sdk.InvalidArgumentError('invalid_id', 'x'),
    new sdk.OwnerConflictError('j'),
    new sdk.JobFinishedError('j'),
    new sdk.UnauthorizedError(401, 'invalid_token', 'x'),
    new sdk.RejectedError(413, 'payload_too_large', 'x'),
    new sdk.InternalError('x'),
  ]) {
    assert.ok(error instanceof sdk.PublishError && error instanceof Error);
    assert.equal(error.isTransient(), false, error.name);
  }
});
