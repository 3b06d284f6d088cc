// The stream's reconnect policy end to end, against a real HTTP server on the loopback
// that answers each request from a script (the answers a gateway gives: streams that end,
// 503 with Retry-After, 401, 204, 404, silence). Node's own fetch is the transport, as a
// browser's is. The browser suite runs the same client against real gateways.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { openStream, openTopicStream, streamUrl, topicsUrl } from '../dist/index.js';

/** A server whose n-th request gets `handlers[n]` (the last one again after the end). */
async function scripted(handlers) {
  const requests = [];
  const server = http.createServer((req, res) => {
    const n = requests.length;
    requests.push({ headers: req.headers, url: req.url, at: performance.now() });
    handlers[Math.min(n, handlers.length - 1)](req, res);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    requests,
    close() {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}

const frame = (id, type, data) => `id: ${id}\nevent: ${type}\ndata: ${JSON.stringify(data)}\n\n`;
const progress = (id, n) => frame(id, 'progress', { jobId: 'j1', type: 'progress', ts: n, progress: n });

/** A 200 event stream with `body`; ended unless `open`. */
function stream(body, { open = false } = {}) {
  return (req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    res.write(body);
    if (!open) { res.end(); }
  };
}

function refuse(status, code, headers = {}) {
  return (req, res) => {
    res.writeHead(status, { 'content-type': 'application/json', ...headers });
    res.end(JSON.stringify({ error: code, message: `${code} (scripted)` }));
  };
}

function noContent(req, res) { res.writeHead(204).end(); }

async function until(what, check, timeout = 5000) {
  const deadline = Date.now() + timeout;
  while (!check()) {
    if (Date.now() > deadline) { throw new Error(`timed out waiting for ${what}`); }
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** Opens a stream that records its events and state changes. */
function follow(options) {
  const s = openStream({ random: () => 0, ...options });
  const events = [];
  const states = [];
  s.onEvent((e) => events.push(`${e.type} ${e.id}`));
  s.onState((c) => states.push({ state: c.state, status: c.status, delayMs: c.delayMs, code: c.error?.code, resumed: c.resumed }));
  return { s, events, states };
}

test('a stream that ends is reopened after `retry:`, resuming with Last-Event-ID; a replayed id is dropped', async () => {
  const server = await scripted([
    stream(`retry: 40\n\n${frame('1-0', 'jobs', { userId: 'u1', jobs: [] })}${progress('2-0', 10)}`),
    stream(`retry: 40\n\n${progress('2-0', 10)}${progress('3-0', 20)}`),
    stream('retry: 40\n\n', { open: true }),
  ]);
  const { s, events, states } = follow({ gateway: server.url });
  try {
    await until('the third request', () => server.requests.length === 3);
    assert.deepEqual(server.requests.map((r) => [r.url, r.headers['last-event-id'], r.headers.authorization, r.headers.accept]), [
      ['/v1/users/me/events', undefined, undefined, 'text/event-stream'],
      ['/v1/users/me/events', '2-0', undefined, 'text/event-stream'],
      ['/v1/users/me/events', '3-0', undefined, 'text/event-stream'],
    ]);
    assert.deepEqual(events, ['jobs 1-0', 'progress 2-0', 'progress 3-0']);
    assert.equal(s.stats.duplicates, 1);
    assert.ok(server.requests[1].at - server.requests[0].at >= 40, 'waited for retry:');
    await until('the third stream to open', () => s.stats.opens === 3);
    assert.deepEqual(states.map((c) => [c.state, c.delayMs, c.resumed]), [
      ['connecting', undefined, undefined], ['open', undefined, false], ['reconnecting', 40, undefined],
      ['open', undefined, true], ['reconnecting', 40, undefined], ['open', undefined, true],
    ]);
    assert.equal(s.lastEventId, '3-0');
  } finally {
    s.close();
    await server.close();
  }
  assert.equal(await s.done, 'closed');
});

test('503 with Retry-After: the next attempt waits at least that long, then the stream resumes', async () => {
  const server = await scripted([
    stream(`retry: 10\n\n${progress('1-0', 1)}`),
    refuse(503, 'draining', { 'retry-after': '1' }),
    stream(`retry: 10\n\n${progress('2-0', 2)}`, { open: true }),
  ]);
  const { s, events, states } = follow({ job: 'j1', gateway: server.url });
  try {
    await until('the resumed event', () => events.length === 2);
    assert.deepEqual(events, ['progress 1-0', 'progress 2-0']);
    assert.equal(server.requests[2].headers['last-event-id'], '1-0');
    const waited = server.requests[2].at - server.requests[1].at;
    assert.ok(waited >= 1000, `waited ${waited} ms`);
    assert.deepEqual(states.find((c) => c.status === 503), { state: 'reconnecting', status: 503, delayMs: 1000, code: 'draining', resumed: undefined });
    assert.equal(server.requests[0].url, '/v1/jobs/j1/events');
  } finally {
    s.close();
    await server.close();
  }
});

test('429 and network errors back off exponentially; maxRetries ends it', async () => {
  const server = await scripted([refuse(429, 'too_many_connections')]);
  const { s, states } = follow({ gateway: server.url, retry: { initialDelayMs: 20, maxRetries: 3 } });
  assert.equal(await s.done, 'stopped');
  await server.close();
  assert.equal(server.requests.length, 4);
  assert.deepEqual(states.filter((c) => c.state === 'reconnecting').map((c) => c.delayMs), [20, 40, 80]);
  assert.deepEqual(states.at(-1), { state: 'stopped', status: 429, delayMs: undefined, code: 'too_many_connections', resumed: undefined });
  assert.equal(s.error.status, 429);

  // Nothing listening: the same policy on connection errors.
  const port = await new Promise((resolve) => {
    const probe = net.createServer().listen(0, '127.0.0.1', () => { const { port: p } = probe.address(); probe.close(() => resolve(p)); });
  });
  const gone = follow({ gateway: `http://127.0.0.1:${port}`, retry: { initialDelayMs: 10, maxRetries: 2 } });
  assert.equal(await gone.s.done, 'stopped');
  assert.deepEqual(gone.states.filter((c) => c.state === 'reconnecting').map((c) => c.delayMs), [10, 20]);
  assert.equal(gone.s.error.status, null);
  assert.match(gone.s.error.message, /network error/);
});

test('401: refreshToken() once, its token in Authorization, and the stream resumes; a second 401 in a row stops', async () => {
  const server = await scripted([
    stream(`retry: 10\n\n${progress('1-0', 1)}`),
    refuse(401, 'token_expired'),
    stream(`retry: 10\n\n${progress('2-0', 2)}`),
    refuse(401, 'token_expired'),
    refuse(401, 'invalid_token'),
  ]);
  const tokens = ['t2', 't3'];
  const { s, events, states } = follow({ gateway: server.url, token: () => 't1', refreshToken: async () => tokens.shift() });
  assert.equal(await s.done, 'stopped');
  await server.close();
  assert.deepEqual(server.requests.map((r) => [r.headers.authorization, r.headers['last-event-id']]), [
    ['Bearer t1', undefined], ['Bearer t1', '1-0'], ['Bearer t2', '1-0'], ['Bearer t2', '2-0'], ['Bearer t3', '2-0'],
  ]);
  assert.deepEqual(events, ['progress 1-0', 'progress 2-0']);
  assert.equal(s.stats.refreshes, 2);
  assert.deepEqual(states.at(-1), { state: 'stopped', status: 401, delayMs: undefined, code: 'invalid_token', resumed: undefined });
});

test('401 without refreshToken stops; with the cookie no Authorization is sent', async () => {
  const server = await scripted([refuse(401, 'missing_token')]);
  const { s } = follow({ gateway: server.url });
  assert.equal(await s.done, 'stopped');
  await server.close();
  assert.equal(server.requests.length, 1);
  assert.equal(server.requests[0].headers.authorization, undefined);
  assert.equal(s.error.code, 'missing_token');
});

test('204 finishes, and nothing more is requested', async () => {
  const server = await scripted([noContent]);
  const { s, states } = follow({ job: 'j1', gateway: server.url, lastEventId: '9-0', retry: { initialDelayMs: 10 } });
  assert.equal(await s.done, 'finished');
  assert.deepEqual(states.map((c) => [c.state, c.status]), [['connecting', undefined], ['finished', 204]]);
  assert.equal(server.requests[0].headers['last-event-id'], '9-0');
  await new Promise((resolve) => setTimeout(resolve, 100));
  assert.equal(server.requests.length, 1);
  await server.close();
});

test('a job stream finishes at its terminal event, or at the end of a finished job\'s status', async () => {
  const server = await scripted([
    stream(`retry: 10\n\n${progress('1-0', 50)}${frame('2-0', 'complete', { jobId: 'j1', type: 'complete', ts: 2, result: 1 })}`, { open: true }),
  ]);
  const one = follow({ job: 'j1', gateway: server.url });
  assert.equal(await one.s.done, 'finished');
  assert.deepEqual(one.events, ['progress 1-0', 'complete 2-0']);

  const finished = { jobId: 'j2', owner: 'u1', status: 'failed', progress: 3, stage: null, message: null, result: null, error: 'x', createdAt: 1, updatedAt: 2, lastEventId: '2-0' };
  const server2 = await scripted([stream(`retry: 10\n\n${frame('2-0', 'status', finished)}`)]);
  const two = follow({ job: 'j2', gateway: server2.url });
  assert.equal(await two.s.done, 'finished');
  await new Promise((resolve) => setTimeout(resolve, 60));
  assert.equal(server.requests.length, 1);
  assert.equal(server2.requests.length, 1);
  await server.close();
  await server2.close();

  // A user stream has no end: the same terminal event is just an event.
  const server3 = await scripted([stream(`retry: 10\n\n${frame('2-0', 'complete', { jobId: 'j1', type: 'complete', ts: 2 })}`)]);
  const user = follow({ gateway: server3.url });
  await until('a reconnection', () => server3.requests.length >= 2);
  user.s.close();
  await server3.close();
});

test('404 and a 200 that is not an event stream stop, with the cause', async () => {
  const server = await scripted([refuse(404, 'not_found')]);
  const { s } = follow({ job: 'nope', gateway: server.url });
  assert.equal(await s.done, 'stopped');
  assert.equal(s.error.status, 404);
  assert.equal(s.error.code, 'not_found');
  assert.match(s.error.message, /not_found \(scripted\)/);
  await server.close();

  const html = await scripted([(req, res) => res.writeHead(200, { 'content-type': 'text/html' }).end('<p>login</p>')]);
  const page = follow({ gateway: html.url });
  assert.equal(await page.s.done, 'stopped');
  assert.equal(page.s.error.status, 200);
  await html.close();
});

test('a silent stream is reopened after idleTimeoutMs, resuming', async () => {
  const server = await scripted([stream(`retry: 10\n\n${progress('1-0', 1)}`, { open: true })]);
  const { s, states } = follow({ gateway: server.url, idleTimeoutMs: 150 });
  try {
    await until('a second request', () => server.requests.length >= 2);
    const waited = server.requests[1].at - server.requests[0].at;
    assert.ok(waited >= 150, `reopened after ${waited} ms`);
    assert.equal(server.requests[1].headers['last-event-id'], '1-0');
    assert.ok(states.some((c) => c.state === 'reconnecting'));
  } finally {
    s.close();
    await server.close();
  }
});

test('a resync snapshot resets the position: later events with lower ids are applied', async () => {
  const server = await scripted([
    stream(`retry: 10\n\n${frame('50-0', 'status', { jobId: 'j1', status: 'active', resync: true })}${progress('51-0', 5)}`, { open: true }),
  ]);
  const { s, events } = follow({ job: 'j1', gateway: server.url, lastEventId: '900-0' });
  try {
    await until('two events', () => events.length === 2);
    assert.deepEqual(events, ['status 50-0', 'progress 51-0']);
    assert.equal(s.stats.resyncs, 1);
    assert.equal(s.stats.duplicates, 0);
  } finally {
    s.close();
    await server.close();
  }
});

test('close() during a retry wait ends the stream at once', async () => {
  const server = await scripted([refuse(503, 'node_at_capacity', { 'retry-after': '30' })]);
  const { s, states } = follow({ gateway: server.url });
  await until('the wait', () => states.some((c) => c.state === 'reconnecting'));
  const started = performance.now();
  s.close();
  assert.equal(await s.done, 'closed');
  assert.ok(performance.now() - started < 100);
  assert.equal(server.requests.length, 1);
  await server.close();
});

test('typed listeners get their type only; a throwing listener does not end the stream', async () => {
  const server = await scripted([stream(`retry: 10\n\n${progress('1-0', 1)}${frame('2-0', 'log', { jobId: 'j1', type: 'log', ts: 2, message: 'x' })}`, { open: true })]);
  const s = openStream({ gateway: server.url });
  const logs = [];
  // The client reports a listener's exception by throwing it from a microtask of its own
  // (an uncaught error, as a browser shows it); here that microtask is caught.
  const thrown = [];
  const queue = globalThis.queueMicrotask;
  globalThis.queueMicrotask = (task) => queue(() => { try { task(); } catch (error) { thrown.push(error.message); } });
  s.on('progress', () => { throw new Error('listener bug'); });
  s.on('log', (e) => logs.push(e.data.message));
  try {
    await until('the log event', () => logs.length === 1);
    await until('the listener error reported', () => thrown.length === 1);
    assert.deepEqual(thrown, ['listener bug']);
    assert.equal(s.state, 'open');
  } finally {
    globalThis.queueMicrotask = queue;
    s.close();
    await server.close();
  }
});

test('closed before it started: no request, and the state stays closed', async () => {
  const server = await scripted([stream('retry: 10\n\n', { open: true })]);
  const { s, states } = follow({ gateway: server.url });
  s.close();
  assert.equal(await s.done, 'closed');
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.equal(s.state, 'closed');
  assert.deepEqual(states.map((c) => c.state), ['closed']);
  assert.equal(server.requests.length, 0);
  await server.close();
});

// ---- topic streams (docs/protocol.md, "Topics") -------------------------------------------------

/** Opens a topic stream that records its events (type, id, topic) and state changes. */
function followTopics(options) {
  const s = openTopicStream({ random: () => 0, ...options });
  const events = [];
  const states = [];
  s.onEvent((e) => events.push(`${e.type} ${e.id} ${e.data.topic}`));
  s.onState((c) => states.push(c.state));
  return { s, events, states };
}

const announcement = (id, topic, n) => frame(id, 'announcement', { topic, type: 'announcement', ts: n, title: `a${n}` });

test('an id-only block is the position: a topic stream that breaks before its first event resumes from its live edge', async () => {
  const server = await scripted([
    // A fresh stream: `retry:`, the id-only block at the live edge, then the stream breaks
    // (the block's id and its blank line in two writes, as the network may deliver them).
    (req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write('retry: 10\n\nid: 5-0\n');
      setTimeout(() => res.end('\n'), 20);
    },
    // Resumed: the event after it, then an id-only block again, and the end.
    stream(`retry: 10\n\n${announcement('6-0', 'news', 6)}id: 6-0\n\n`),
    stream('retry: 10\n\n', { open: true }),
  ]);
  const { s, events } = followTopics({ topic: 'news', gateway: server.url });
  try {
    await until('the third request', () => server.requests.length === 3);
    assert.deepEqual(server.requests.map((r) => [r.url, r.headers['last-event-id']]), [
      ['/v1/topics/news/events', undefined],
      ['/v1/topics/news/events', '5-0'],
      ['/v1/topics/news/events', '6-0'],
    ]);
    // The id-only blocks dispatch nothing; the event after the first one is not a duplicate of it.
    assert.deepEqual(events, ['announcement 6-0 news']);
    assert.equal(s.stats.duplicates, 0);
    assert.equal(s.lastEventId, '6-0');
  } finally {
    s.close();
    await server.close();
  }
});

test('an id-only block between events moves the position; events are still checked against it', async () => {
  const server = await scripted([
    stream(`retry: 10\n\nid: 3-0\n\n${announcement('4-0', 'news', 4)}id: 9-0\n\n${announcement('8-0', 'news', 8)}${announcement('10-0', 'news', 10)}`, { open: true }),
  ]);
  const { s, events } = followTopics({ topic: 'news', gateway: server.url });
  try {
    await until('the last event', () => events.length === 2);
    assert.deepEqual(events, ['announcement 4-0 news', 'announcement 10-0 news']);
    assert.equal(s.stats.duplicates, 1, '8-0 is not above the position 9-0');
    assert.equal(s.lastEventId, '10-0');
  } finally {
    s.close();
    await server.close();
  }
});

test('a topic stream\'s resync marker: typed, counted, never dropped (its id may be lower), and the stream goes on', async () => {
  const server = await scripted([
    stream(`retry: 10\n\n${frame('50-0', 'resync', { topic: 'news', resync: true })}${announcement('51-0', 'news', 51)}`
      // A topic event named like a job's terminal event ends nothing on a topic stream.
      + frame('52-0', 'complete', { topic: 'news', type: 'complete', ts: 52 })),
    stream('retry: 10\n\n', { open: true }),
  ]);
  const { s, events, states } = followTopics({ topic: 'news', gateway: server.url, lastEventId: '900-0' });
  const markers = [];
  s.on('resync', (e) => markers.push([e.data.topic, e.data.resync, e.id]));
  try {
    await until('the reconnection', () => server.requests.length === 2);
    assert.equal(server.requests[0].headers['last-event-id'], '900-0');
    assert.deepEqual(events, ['resync 50-0 news', 'announcement 51-0 news', 'complete 52-0 news']);
    assert.deepEqual(markers, [['news', true, '50-0']]);
    assert.equal(s.stats.resyncs, 1);
    assert.equal(s.stats.duplicates, 0);
    assert.equal(server.requests[1].headers['last-event-id'], '52-0');
    assert.deepEqual(states.slice(0, 3), ['connecting', 'open', 'reconnecting']);
  } finally {
    s.close();
    await server.close();
  }
});

test('several topics: composite ids are resumed verbatim, from the id-only block and from events', async () => {
  // The example of docs/protocol.md, then positions as the gateway moves them.
  const edge = 't1.3qes.m3s6azm0.99~0.0~3';
  const first = 't1.3qes.m3s6azm5.9e~0.0~0';
  const second = 't1.3qes.m3s6azm5._.1~0';
  const server = await scripted([
    stream(`retry: 10\n\nid: ${edge}\n\n`),
    stream(`retry: 10\n\n${announcement(first, 'prices', 1)}${announcement(second, 'news', 2)}`),
    stream('retry: 10\n\n', { open: true }),
  ]);
  const { s, events } = followTopics({ topics: ['prices', 'news'], gateway: server.url });
  try {
    await until('the third request', () => server.requests.length === 3);
    assert.deepEqual(server.requests.map((r) => [r.url, r.headers['last-event-id']]), [
      ['/v1/topics/events?topic=prices&topic=news', undefined],
      ['/v1/topics/events?topic=prices&topic=news', edge],
      ['/v1/topics/events?topic=prices&topic=news', second],
    ]);
    assert.deepEqual(events, [`announcement ${first} prices`, `announcement ${second} news`]);
    assert.equal(s.lastEventId, second);
  } finally {
    s.close();
    await server.close();
  }
});

test('composite ids are never compared: an id that would sort lower, or equal the position, is delivered', async () => {
  // In string order (and by any reading of them as numbers) these go down; each is a new
  // position all the same. `<ms>-<seq>` ids on the same client are still checked (the first test).
  const ids = ['t1.3qes.m3s6azm9.0~5.2~0', 't1.3qes.m3s6azm9.0~6.2~0', 't1.3qes.m3s6azma.1~0.0~0', 't1.3qes.m3s6azm0.0~0.0~1'];
  const server = await scripted([
    stream(`retry: 10\n\n${ids.map((id, i) => announcement(id, i % 2 ? 'news' : 'prices', i)).join('')}`, { open: true }),
  ]);
  const { s, events } = followTopics({ topics: ['news', 'prices'], gateway: server.url, lastEventId: ids[0] });
  try {
    await until('every event', () => events.length === ids.length);
    assert.deepEqual(events.map((e) => e.split(' ')[1]), ids);
    assert.equal(s.stats.duplicates, 0);
    assert.equal(s.lastEventId, ids.at(-1));
  } finally {
    s.close();
    await server.close();
  }
});

test('an anonymous topic stream sends no credential: no Authorization, credentials "omit"', async () => {
  const seen = [];
  const server = await scripted([stream(`retry: 10\n\nid: 0-0\n\n${announcement('1-0', 'lobby', 1)}`, { open: true })]);
  const spy = (url, init) => { seen.push({ url, credentials: init.credentials, headers: init.headers }); return fetch(url, init); };
  const anonymous = followTopics({ topic: 'lobby', gateway: server.url, anonymous: true, token: 'stale', fetch: spy });
  const withToken = followTopics({ topic: 'lobby', gateway: server.url, token: 't1', fetch: spy });
  const withCookie = followTopics({ topic: 'lobby', gateway: server.url, fetch: spy });
  try {
    await until('three events', () => anonymous.events.length + withToken.events.length + withCookie.events.length === 3);
    assert.deepEqual(seen.map((r) => [r.credentials, r.headers.Authorization]), [
      ['omit', undefined], ['same-origin', 'Bearer t1'], ['include', undefined],
    ]);
    assert.equal(server.requests[0].headers.authorization, undefined);
  } finally {
    for (const f of [anonymous, withToken, withCookie]) { f.s.close(); }
    await server.close();
  }
});

test('topic stream URLs: one topic, several, `since` in the query; the position of a reconnection goes in the header', async () => {
  // `:` is a path character, and the gateway does not percent-decode paths: sent verbatim.
  assert.equal(topicsUrl({ gateway: 'https://sse.example.com/', topic: 'team.42:builds' }), 'https://sse.example.com/v1/topics/team.42:builds/events');
  assert.equal(streamUrl({ job: 'render:7' }), '/v1/jobs/render:7/events');
  assert.equal(streamUrl({ job: 'a/b c' }), '/v1/jobs/a%2Fb%20c/events');
  assert.equal(topicsUrl({ topic: 'news', since: '0-0' }), '/v1/topics/news/events?since=0-0');
  assert.equal(topicsUrl({ topics: ['news', 'prices'], since: 't1.3qes.m3s6azm0.99~0.0~3' }),
    '/v1/topics/events?topic=news&topic=prices&since=t1.3qes.m3s6azm0.99~0.0~3');
  assert.equal(topicsUrl({ url: 'https://x/y', topic: 'news', since: '1-0' }), 'https://x/y');
  assert.throws(() => topicsUrl({}), TypeError);

  const server = await scripted([stream(`retry: 10\n\n${announcement('7-0', 'news', 7)}`), stream('retry: 10\n\n', { open: true })]);
  const { s } = followTopics({ topic: 'news', gateway: server.url, since: '0-0' });
  try {
    await until('the reconnection', () => server.requests.length === 2);
    assert.deepEqual(server.requests.map((r) => [r.url, r.headers['last-event-id']]), [
      ['/v1/topics/news/events?since=0-0', undefined],
      ['/v1/topics/news/events?since=0-0', '7-0'],
    ]);
  } finally {
    s.close();
    await server.close();
  }
});
